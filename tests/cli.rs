//! The command line's own documentation: the man page and the shell
//! completions the Nix package installs (`postern generate`), and the
//! `--config` default.

mod support;

use support::{postern, run, stderr};

/// The files nix/package.nix installs, with every command in them.
#[test]
fn man_page_and_completions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for what in ["man", "bash", "zsh", "fish"] {
        let o = run(&["generate", what, d]);
        assert!(o.status.success(), "{what}: {}", stderr(&o));
    }
    let man = std::fs::read_to_string(dir.path().join("postern.1"))
        .unwrap()
        .replace("\\-", "-");
    assert!(man.contains(".TH postern"), "{man}");
    for command in [
        "serve",
        "check-config",
        "probe",
        "queue",
        "tlsa",
        "reports",
        "domains",
    ] {
        assert!(
            man.contains(&format!("postern-{command}(1)")),
            "postern.1 names `{command}`"
        );
        let page = dir.path().join(format!("postern-{command}.1"));
        assert!(page.exists(), "{} exists", page.display());
    }
    let queue = std::fs::read_to_string(dir.path().join("postern-queue-list.1"))
        .unwrap()
        .replace("\\-", "-");
    assert!(queue.contains("--domain"), "{queue}");
    let bash = std::fs::read_to_string(dir.path().join("postern.bash")).unwrap();
    for word in ["hold", "release", "forget", "--timeout"] {
        assert!(bash.contains(word), "bash completion knows {word}");
    }
    assert!(dir.path().join("_postern").exists());
    assert!(dir.path().join("postern.fish").exists());
    let o = run(&["generate", "tcsh", d]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

/// Every flag of every command says what it does.
#[test]
fn every_flag_has_help() {
    let commands: &[&[&str]] = &[
        &["serve"],
        &["check-config"],
        &["probe"],
        &["queue", "list"],
        &["queue", "show"],
        &["queue", "retry"],
        &["queue", "delete"],
        &["queue", "hold"],
        &["queue", "release"],
        &["tlsa", "records"],
        &["tlsa", "verify"],
        &["tlsa", "status"],
        &["tlsa", "sync"],
        &["reports", "list"],
        &["reports", "show"],
        &["reports", "send-now"],
        &["domains", "list"],
        &["domains", "show"],
        &["domains", "forget"],
    ];
    for c in commands {
        let mut args = c.to_vec();
        args.push("--help");
        let help = support::stdout(&run(&args));
        for line in help.lines().filter(|l| l.trim_start().starts_with('-')) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let described = words.len() > 2 || (words.len() == 2 && !words[1].starts_with('<'));
            assert!(described, "{c:?}: `{}` has no help text", line.trim());
        }
    }
}

/// `--config` falls back to `$POSTERN_CONFIG`.
#[test]
fn config_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.json");
    std::fs::write(
        &cfg,
        r#"{"storage": {"path": "/nonexistent/postern-cli-test"}}"#,
    )
    .unwrap();
    // a client command without --config reads the file $POSTERN_CONFIG names:
    // its control socket is looked for under that storage path
    let o = postern()
        .args(["queue", "list"])
        .env("POSTERN_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/nonexistent/postern-cli-test"),
        "{}",
        stderr(&o)
    );
}
