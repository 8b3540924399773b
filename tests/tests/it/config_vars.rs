//! The variables the code reads, `.env.example`, the README's configuration table and `--help` agree; `.env` is read
//! from the working directory, and the environment and flags win over it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use clap::CommandFactory;
use flowtrace::config::{Cli, OTHER_VARIABLES};

use crate::process::{TempFolder, flowtrace, run, text};

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Every `NAME` in `text` that looks like one of ours: upper case, digits and `_`, starting `FLOWTRACE_`, or one of
/// the few others.
fn names_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.starts_with("FLOWTRACE_") || ["DATABASE_URL", "RUST_LOG", "POSTGRES_PASSWORD"].contains(w))
        .map(str::to_owned)
        .collect()
}

/// Expands `FLOWTRACE_{A,B}_X` into `FLOWTRACE_A_X` and `FLOWTRACE_B_X`.
fn expand_braces(text: &str) -> String {
    let mut out = String::new();
    for word in text.split('`') {
        match (word.find('{'), word.find('}')) {
            (Some(open), Some(close)) if open < close => {
                for choice in word[open + 1..close].split(',') {
                    out.push_str(&format!(" {}{choice}{} ", &word[..open], &word[close + 1..]));
                }
            }
            _ => out.push_str(word),
        }
        out.push(' ');
    }
    out
}

/// The variables docker-compose.yml substitutes (`${NAME…}`): in `.env.example`, but not read by flowtrace.
fn compose_only() -> BTreeSet<String> {
    let compose = repo_file("docker-compose.yml");
    compose.split("${").skip(1).flat_map(|rest| names_in(rest.split([':', '}']).next().unwrap_or(""))).collect()
}

#[test]
fn env_example_readme_and_help_name_the_same_variables() {
    let mut from_help: BTreeSet<String> = BTreeSet::new();
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let cli = Cli::command();
    walk(&cli, &mut from_help);
    from_help.extend(names_in(OTHER_VARIABLES));
    let rendered = Cli::command().render_long_help().to_string();
    assert!(rendered.contains("RUST_LOG"), "--help names RUST_LOG");

    let compose = compose_only();
    assert_eq!(compose, BTreeSet::from(["POSTGRES_PASSWORD".to_owned()]), "docker-compose.yml's own variables");
    let example: BTreeSet<String> = names_in(&repo_file(".env.example")).difference(&compose).cloned().collect();
    let readme = repo_file("README.md");
    let table = readme.split("## Configuration").nth(1).and_then(|rest| rest.split("\n## ").next()).expect("table");
    let table_rows: String = table.lines().filter(|l| l.starts_with("| `")).collect::<Vec<_>>().join("\n");
    let in_readme = names_in(&expand_braces(&table_rows));

    assert_eq!(example, from_help, ".env.example (left) and the code's variables (right) differ");
    assert_eq!(in_readme, from_help, "the README's configuration table (left) and the code's variables (right) differ");
}

#[tokio::test]
async fn env_example_is_valid_shell_and_valid_configuration() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.env.example");
    let script = "set -a; . \"$1\"; set +a; printf '%s|%s|%s' \"$FLOWTRACE_SESSIONS_RETENTION\" \
                  \"$FLOWTRACE_REFRESH_EVERY\" \"$RUST_LOG\"";
    let out = std::process::Command::new("sh").args(["-c", script, "sh"]).arg(&example).output().expect("sh");
    assert!(out.status.success(), "sourcing .env.example failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "90 days|30 minutes|info,sqlx=warn,sea_orm=warn");

    // As a `.env`, every value is accepted: a public bind is then refused for want of auth, which is checked after
    // every setting has been parsed and before any database is touched.
    let folder = TempFolder::new("env-example");
    std::fs::copy(&example, folder.0.join(".env")).expect("copy");
    let out = run(flowtrace(&folder.0, &["serve", "--bind", "0.0.0.0:0"]), Duration::from_secs(60)).await;
    assert!(text(&out.stderr).contains("without authentication"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn dot_env_in_the_working_directory_is_read_and_the_environment_and_flags_win() {
    let folder = TempFolder::new("dotenv");
    std::fs::write(folder.0.join(".env"), "DATABASE_URL=\"postgres://from-dotenv@127.0.0.1:1/x\"\n").expect("write");
    let limit = Duration::from_secs(60);
    let out = run(flowtrace(&folder.0, &["db", "url"]), limit).await;
    assert_eq!(text(&out.stdout).trim(), "postgres://from-dotenv@127.0.0.1:1/x", "{}", text(&out.stderr));

    let mut cmd = flowtrace(&folder.0, &["db", "url"]);
    cmd.env("DATABASE_URL", "postgres://from-env@127.0.0.1:1/x");
    assert_eq!(text(&run(cmd, limit).await.stdout).trim(), "postgres://from-env@127.0.0.1:1/x");

    let mut cmd = flowtrace(&folder.0, &["db", "url", "--database-url", "postgres://from-flag@127.0.0.1:1/x"]);
    cmd.env("DATABASE_URL", "postgres://from-env@127.0.0.1:1/x");
    assert_eq!(text(&run(cmd, limit).await.stdout).trim(), "postgres://from-flag@127.0.0.1:1/x");

    // Only the working directory's `.env`: a parent's is not read.
    let child = folder.0.join("child");
    std::fs::create_dir_all(&child).expect("mkdir");
    let out = run(flowtrace(&child, &["db", "url", "--data-dir", "/nonexistent/flowtrace"]), limit).await;
    assert!(!out.status.success(), "no .env here, so the embedded folder is asked (and has no cluster)");
    assert!(text(&out.stderr).contains("no embedded PostgreSQL"), "{}", text(&out.stderr));
}
