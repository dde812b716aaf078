//! The bank example run twice on one SQLite file, as two processes: the second run reports
//! the first run's accounts from the durable projection (which handled each event once), its
//! in-process event handlers print only its own events, and its welcome-mail reaction mails
//! only its own customers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

/// The example's binary, built beside this test by `cargo test`.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(|deps| deps.parent()).unwrap();
    debug
        .join("examples")
        .join(format!("bank{}", std::env::consts::EXE_SUFFIX))
}

/// A database file for one test, removed (with its WAL files) when dropped.
struct TempDb(PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.0.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

/// Runs the example on `db` and returns its output; fails on a non-zero exit.
fn run(db: &TempDb) -> String {
    let output = Command::new(example())
        .env("LEXIGRAM_BANK_DB", &db.0)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run {}: {e} (build it with `cargo test`)",
                example().display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The number after `prefix` on the line that starts with it.
fn number_after(output: &str, prefix: &str) -> usize {
    let line = output
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line `{prefix}..` in:\n{output}"));
    line[prefix.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in `{line}`"))
}

#[test]
fn a_second_run_sees_the_first_runs_balances_and_repeats_no_side_effect() {
    let db = TempDb(std::env::temp_dir().join(format!(
        "lexigram-bank-restart-{}-{}.db",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )));
    let first = run(&db);
    assert_eq!(
        number_after(&first, "Accounts in the read model before this run: "),
        0
    );
    let second = run(&db);
    assert_eq!(
        number_after(&second, "Accounts in the read model before this run: "),
        3,
        "Ada, Bob and Carol of the first run:\n{second}"
    );
    // The first run's balances, as the projection holds them.
    let earlier: Vec<&str> = second
        .lines()
        .skip_while(|l| !l.starts_with("Accounts in the read model before this run"))
        .skip(1)
        .take(3)
        .collect();
    assert_eq!(
        earlier,
        ["  Ada: 105", "  Bob: 20", "  Carol: 0"],
        "{second}"
    );
    assert_eq!(
        number_after(&second, "Accounts in the read model after the restart: "),
        6
    );
    // In-process handlers ran for this run's events only: 3 openings and 5 movements.
    for output in [&first, &second] {
        assert_eq!(
            output
                .lines()
                .filter(|l| l.starts_with("  event: "))
                .count(),
            8,
            "{output}"
        );
        assert!(output.contains("from 3 deliveries"), "{output}");
    }
}
