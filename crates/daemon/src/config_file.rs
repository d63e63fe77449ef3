//! The daemon's config file (`switchboard up --config FILE`), parsed once.
//!
//! The file is one TOML document whose top-level keys belong to owners: the
//! daemon's policy (`[security]`, `[roles.*]`, `[[policy]]`) and each hosted
//! app (the supervisor's `[services.*]` and `[logs]`, …). [`ConfigFile::split`]
//! parses the text once and hands every owner a [`Section`] holding only its
//! keys, which the owner turns into its own validated type; a key nobody
//! owns is refused with its line. Errors name the file and the line.
//!
//! Owns parsing and error positions only; what a section means is its
//! owner's business.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, Deserializer};
use toml::Spanned;

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {origin}{}: {message}", at_line(*line))]
    Syntax { origin: String, line: Option<usize>, message: String },
    #[error("config {origin}, line {line}: unknown section `{key}` (known: {known})")]
    UnknownSection { origin: String, line: usize, key: String, known: String },
    /// An owner's own validation refused its section (at `line` when the
    /// refused part is known to start there).
    #[error("config {origin}{}: {what}: {message}", at_line(*line))]
    Invalid { origin: String, line: Option<usize>, what: String, message: String },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|line| format!(", line {line}")).unwrap_or_default()
}

/// A config file's text and where it came from.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    origin: String,
    text: String,
}

impl Default for ConfigFile {
    /// No file: every owner gets an empty section.
    fn default() -> Self {
        Self::from_text("(none)", String::new())
    }
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Ok(Self::from_text(&path.display().to_string(), text))
    }

    /// A config given as text; `origin` is what errors call it.
    pub fn from_text(origin: &str, text: String) -> Self {
        Self { origin: origin.to_owned(), text }
    }

    /// The config with `overlay` (TOML from the command line) after it. A
    /// section both set is refused, naming the option and the file.
    pub fn with_overlay(mut self, overlay: Option<&str>) -> Result<Self, ConfigError> {
        let Some(overlay) = overlay else { return Ok(self) };
        let (Ok(file), Ok(extra)) = (self.text.parse::<toml::Table>(), overlay.parse::<toml::Table>()) else {
            return Ok(self); // a syntax error is reported, with its line, by the parse that follows
        };
        if let Some(key) = extra.keys().find(|key| file.contains_key(*key)) {
            let message = format!("`[{key}]` is set both here and on the command line (--{key}): keep one");
            return Err(ConfigError::Syntax { origin: self.origin, line: None, message });
        }
        self.text.push('\n');
        self.text.push_str(overlay);
        Ok(self)
    }

    /// Parses the document once and gives each owner its keys, in the
    /// order of `owners` (each a list of top-level keys). A key no owner
    /// lists is refused.
    pub fn split(&self, owners: &[&[&str]]) -> Result<Vec<Section<'_>>, ConfigError> {
        let (sections, mut unknown) = self.split_all(owners)?;
        match unknown.is_empty() {
            true => Ok(sections),
            false => Err(unknown.remove(0)),
        }
    }

    /// As [`ConfigFile::split`], but every key no owner lists is returned as
    /// an error beside the sections instead of stopping at the first
    /// (`switchboard check` reports every problem). A syntax error still
    /// stops: nothing after it can be read.
    pub fn split_all(&self, owners: &[&[&str]]) -> Result<(Vec<Section<'_>>, Vec<ConfigError>), ConfigError> {
        let root = DeTable::parse(&self.text).map_err(|err| self.syntax(&err))?;
        let span = root.span();
        let mut parts: Vec<DeTable<'_>> = owners.iter().map(|_| DeTable::new()).collect();
        let mut unknown = Vec::new();
        for (key, value) in root.into_inner() {
            match owners.iter().position(|keys| keys.contains(&key.get_ref().as_ref())) {
                Some(owner) => {
                    parts[owner].insert(key, value);
                }
                None => {
                    let known: Vec<&str> = owners.iter().flat_map(|keys| keys.iter().copied()).collect();
                    unknown.push(ConfigError::UnknownSection {
                        origin: self.origin.clone(),
                        line: self.line_of(key.span().start),
                        key: key.get_ref().to_string(),
                        known: known.join(", "),
                    });
                }
            }
        }
        let sections = parts
            .into_iter()
            .map(|table| Section { file: self, table: Spanned::new(span.clone(), table), line: None })
            .collect();
        Ok((sections, unknown))
    }

    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
    }

    fn syntax(&self, err: &toml::de::Error) -> ConfigError {
        ConfigError::Syntax {
            origin: self.origin.clone(),
            line: err.span().map(|span| self.line_of(span.start)),
            message: err.message().trim_end().to_owned(),
        }
    }
}

/// One owner's part of a config file.
pub struct Section<'a> {
    file: &'a ConfigFile,
    table: Spanned<DeTable<'a>>,
    /// Where this section starts, for one of [`Section::entries`].
    line: Option<usize>,
}

impl Section<'_> {
    /// The section as the owner's type; a mistake names its line.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        T::deserialize(Deserializer::from(self.table.clone())).map_err(|err| self.file.syntax(&err))
    }

    /// The error for a value the owner's own checks refuse: `what` names it
    /// (`service web`).
    pub fn invalid(&self, what: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: self.file.origin.clone(),
            line: self.line,
            what: what.to_owned(),
            message,
        }
    }

    /// Whether the file says nothing to this owner.
    pub fn is_empty(&self) -> bool {
        self.table.get_ref().is_empty()
    }

    /// Each entry of the table `key` (`[services.web]`, `[services.db]`) as
    /// a section of its own holding only `key.NAME`, with its name: an owner
    /// checks entries one by one to report every mistake, each with its line.
    pub fn entries(&self, key: &str) -> Vec<(String, Section<'_>)> {
        let Some((outer, value)) = self.table.get_ref().get_key_value(key) else {
            return Vec::new();
        };
        let DeValue::Table(entries) = value.get_ref() else {
            return Vec::new();
        };
        entries
            .iter()
            .map(|(name, entry)| {
                let mut inner = DeTable::new();
                inner.insert(name.clone(), entry.clone());
                let mut table = DeTable::new();
                table.insert(outer.clone(), Spanned::new(value.span(), DeValue::Table(inner)));
                let line = Some(self.file.line_of(name.span().start));
                let section =
                    Section { file: self.file, table: Spanned::new(self.table.span(), table), line };
                (name.get_ref().to_string(), section)
            })
            .collect()
    }

    /// The line a top-level key of this section starts on, if present.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.table.get_ref().get_key_value(key).map(|(k, _)| self.file.line_of(k.span().start))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Animals {
        #[serde(default)]
        cats: BTreeMap<String, u32>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Plants {
        #[serde(default)]
        trees: Vec<String>,
    }

    const OWNERS: &[&[&str]] = &[&["cats"], &["trees"]];

    #[test]
    fn each_owner_gets_only_its_keys() {
        let file = ConfigFile::from_text("zoo.toml", "trees = [\"oak\"]\n[cats]\ntom = 3\n".into());
        let mut sections = file.split(OWNERS).unwrap().into_iter();
        let animals: Animals = sections.next().unwrap().parse().unwrap();
        let plants: Plants = sections.next().unwrap().parse().unwrap();
        assert_eq!(animals.cats["tom"], 3);
        assert_eq!(plants.trees, ["oak"]);
    }

    #[test]
    fn an_unknown_section_is_refused_with_its_line() {
        let file = ConfigFile::from_text("zoo.toml", "[cats]\ntom = 3\n\n[colours]\nred = 1\n".into());
        let err = file.split(OWNERS).err().unwrap().to_string();
        assert_eq!(err, "config zoo.toml, line 4: unknown section `colours` (known: cats, trees)");
    }

    #[test]
    fn mistakes_inside_a_section_name_the_line() {
        let file = ConfigFile::from_text("zoo.toml", "trees = []\n[cats]\ntom = \"three\"\n".into());
        let err = file.split(OWNERS).unwrap().remove(0).parse::<Animals>().unwrap_err().to_string();
        assert!(err.starts_with("config zoo.toml, line 3: "), "{err}");
        let file = ConfigFile::from_text("zoo.toml", "[cats\n".into());
        let err = file.split(OWNERS).err().unwrap().to_string();
        assert!(err.starts_with("config zoo.toml, line 1: "), "{err}");
    }

    #[test]
    fn no_file_gives_every_owner_an_empty_section() {
        let file = ConfigFile::default();
        let sections = file.split(OWNERS).unwrap();
        assert!(sections.iter().all(Section::is_empty));
        let animals: Animals = file.split(OWNERS).unwrap().remove(0).parse().unwrap();
        assert!(animals.cats.is_empty());
    }
}
