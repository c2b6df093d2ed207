//! `cargo bench -p auth-service --bench login`: the time of a login by case, to check
//! that a refusal does not tell an unknown user, a wrong password, a disabled user
//! and a user still on a fastDeploy bcrypt hash (passlib's cost 12) apart. Runs
//! `Accounts::login` on a SQLite file, round-robin over the cases, and prints each
//! case's median and 90th percentile. Prints figures; asserts no timing.

use std::time::{Duration, Instant};

use auth_service::{accounts::Accounts, passwords::Hasher, storage::Store};
use secrecy::SecretString;

const ROUNDS: usize = 21;
/// passlib's default bcrypt cost, what fastDeploy's hashes have.
const LEGACY_COST: u32 = 12;

/// What is measured, user name, password, and whether the login succeeds.
type Case = (&'static str, &'static str, &'static str, bool);

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&common::db::sqlite_url(dir.path(), "auth.db")).await?;
    let accounts = Accounts::new(store.clone(), Hasher::new(1).await?);
    accounts.create("alice", &secret("alices password")).await?;
    accounts.create("admin", &secret("admins password")).await?;
    accounts.create("dora", &secret("doras password")).await?;
    accounts.disable("dora", "admin").await?;

    println!("login timing, {ROUNDS} rounds, median / p90\n");
    println!("-- no legacy hash stored --");
    let cases: Vec<Case> = vec![
        ("unknown user", "nobody", "some password", false),
        ("wrong password (argon2id user)", "alice", "wrong password", false),
        ("disabled user, right password", "dora", "doras password", false),
        ("right password (argon2id user)", "alice", "alices password", true),
    ];
    run(&accounts, &cases).await?;

    let legacy = bcrypt::hash("legacy password", LEGACY_COST)?;
    store.create_user("legacy", &legacy).await?;
    accounts.refresh_legacy().await?;
    println!("\n-- one user still on a bcrypt hash (cost {LEGACY_COST}) --");
    let cases: Vec<Case> = vec![
        ("unknown user", "nobody", "some password", false),
        ("wrong password (argon2id user)", "alice", "wrong password", false),
        ("wrong password (bcrypt user)", "legacy", "wrong password", false),
        ("disabled user, right password", "dora", "doras password", false),
        ("right password (argon2id user)", "alice", "alices password", true),
    ];
    run(&accounts, &cases).await?;
    Ok(())
}

async fn run(accounts: &Accounts, cases: &[Case]) -> anyhow::Result<()> {
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for round in 0..=ROUNDS {
        for (i, (_, name, password, accepted)) in cases.iter().enumerate() {
            let started = Instant::now();
            let user = accounts.login(name, &secret(password)).await?;
            let took = started.elapsed();
            anyhow::ensure!(user.is_some() == *accepted, "{name}: unexpected outcome");
            // Round 0 warms up.
            if round > 0 {
                times[i].push(took);
            }
        }
    }
    for ((what, _, _, _), mut t) in cases.iter().zip(times) {
        t.sort();
        let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
        println!(
            "{what:<34} {:>8.1} ms {:>8.1} ms",
            at(0.5).as_secs_f64() * 1e3,
            at(0.9).as_secs_f64() * 1e3
        );
    }
    Ok(())
}
