//! The live fuzzer's corpus (`crates/cli/examples/fuzz_live.rs --corpus`)
//! seeds these tests: every saved input, and mutations of them, must decode
//! to frames or a typed error — never a panic, never unbounded memory.

use std::path::PathBuf;

use bytes::BytesMut;
use proptest::prelude::*;
use switchboard_proto::{decode, DEFAULT_MAX_FRAME};

fn corpus() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|path| std::fs::read(path).ok()).collect()
}

/// Decodes frame after frame until the input needs more bytes or is refused.
fn decode_all(input: &[u8]) -> usize {
    let mut buf = BytesMut::from(input);
    let mut frames = 0;
    while let Ok(Some(_)) = decode(&mut buf, DEFAULT_MAX_FRAME) {
        frames += 1;
    }
    frames
}

#[test]
fn the_corpus_is_there_and_decodes_without_panicking() {
    let corpus = corpus();
    assert!(corpus.len() >= 20, "the committed corpus is missing ({} inputs)", corpus.len());
    let frames: usize = corpus.iter().map(|input| decode_all(input)).sum();
    assert!(frames > 0, "the corpus holds well-formed frames too");
}

proptest! {
    #[test]
    fn mutated_corpus_inputs_never_panic(
        pick in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
        cut in any::<prop::sample::Index>(),
    ) {
        let corpus = corpus();
        prop_assume!(!corpus.is_empty());
        let mut input = corpus[pick.index(corpus.len())].clone();
        if !input.is_empty() {
            for (at, byte) in flips {
                let i = at.index(input.len());
                input[i] ^= byte;
            }
            input.truncate(cut.index(input.len() + 1));
        }
        decode_all(&input);
    }
}
