//! Certificates for the TLS tests, made with the distribution's openssl in
//! a test's own directory: a CA (`ca.pem`), a server certificate for
//! 127.0.0.1 and localhost (`server.pem`/`.key`), a client certificate for
//! `edge-1` (`client.pem`/`.key`), and a forgery — a client certificate also
//! named `edge-1` but signed by a CA nobody trusts (`forged.pem`/`.key`).

use std::path::Path;
use std::process::Command;

pub fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for (ca, cn) in [("ca", "test-ca"), ("other-ca", "test-ca")] {
        let (key, pem, subject) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN={cn}"));
        run(&[&["req", "-x509"], &ec[..], &["-keyout", &key, "-out", &pem, "-days", "1", "-subj", &subject]]
            .concat());
    }
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    for (name, cn, ca, ext) in [
        ("server", "localhost", "ca", "server"),
        ("client", "edge-1", "ca", "client"),
        ("forged", "edge-1", "other-ca", "client"),
    ] {
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        run(&[&["req"], &ec[..], &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={cn}")]].concat());
        let (ca_pem, ca_key, ext) = (format!("{ca}.pem"), format!("{ca}.key"), format!("{ext}.ext"));
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            &ext,
        ]);
    }
}
