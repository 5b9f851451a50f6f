//! `adze server --print-config` shows the layered settings of every role, secrets
//! redacted, without connecting to anything.

use std::process::Command;

#[test]
fn print_config_shows_role_settings_from_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_adze"))
        .args(["server", "--print-config"])
        .env("ADZE_REAPER__MAINTENANCE_EVERY_MS", "0")
        .env("ADZE_SCHEDULER__SLOT_REFRESH_MS", "333")
        .env("ADZE_AUTH__SECRET", "do-not-print-me")
        .output()
        .expect("run adze");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.contains("maintenance_every_ms: 0,"), "{text}");
    assert!(text.contains("slot_refresh_ms: 333,"), "{text}");
    assert!(!text.contains("do-not-print-me"), "{text}");
}
