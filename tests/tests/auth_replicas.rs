//! Auth replicas on one database (issue 15): the signing keys live in the database,
//! sealed under the key-encryption key; a rotation on one replica is accepted by every
//! verifier from its first token, old tokens verify until they expire, and revocations
//! made on any replica are refused by every verifier within a second. On PostgreSQL
//! with two auth replicas ("auth", which the verifiers follow, and "auth-b"); on
//! SQLite with the one replica.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use proto::{
    auth::v1::{self as auth, auth_service_client::AuthServiceClient},
    deploy::v1::{self as dep, deploy_service_client::DeployServiceClient},
    registry::v1::{self as reg, registry_service_client::RegistryServiceClient},
};
use tests::{
    Backend, Stack,
    grpc::{attenuated, bearer, channel, claims_of},
    keys, on_every_backend,
    stack::{ADMIN, ADMIN_PASSWORD},
    wait_until,
};
use tonic::transport::Channel;

on_every_backend!(
    a_key_rotated_on_one_replica_is_accepted_everywhere_at_once,
    revocations_on_any_replica_reach_every_verifier_within_a_second,
    the_kek_is_required_and_no_private_key_is_stored_in_the_clear,
    keys_of_the_old_keys_dir_are_imported_and_their_tokens_stay_valid,
);

#[tokio::test(flavor = "multi_thread")]
async fn revocations_still_spread_when_the_listening_connections_drop() {
    if Backend::Postgres.available().await {
        listening_connections_drop().await;
    }
}

/// The auth replicas of a test: two on PostgreSQL, the one on SQLite.
fn replicas(stack: &mut Stack) -> Vec<SocketAddr> {
    match stack.backend {
        Backend::Postgres => vec![stack.auth, stack.add_auth_replica("auth-b")],
        Backend::Sqlite => vec![stack.auth],
    }
}

/// Every verifier of the stack, with connections kept open.
struct Verifiers {
    registry: RegistryServiceClient<Channel>,
    deploy: DeployServiceClient<Channel>,
}

impl Verifiers {
    async fn new(stack: &Stack) -> Self {
        Verifiers {
            registry: RegistryServiceClient::new(channel(stack.registry).await),
            deploy: DeployServiceClient::new(channel(stack.deploy).await),
        }
    }

    /// Which verifiers accept `token`: the gateway, the registry, the deploy service.
    async fn accepting(&self, stack: &Stack, token: &str) -> [bool; 3] {
        let gateway = stack
            .http
            .get(stack.url("/v1/services"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        let registry = self
            .registry
            .clone()
            .list_services(bearer(reg::ListServicesRequest::default(), token))
            .await;
        let deploy = self
            .deploy
            .clone()
            .list_deployments(bearer(dep::ListDeploymentsRequest::default(), token))
            .await;
        if let Err(status) = registry.as_ref().map(|_| ()).and(deploy.as_ref().map(|_| ())) {
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        }
        [gateway.is_success(), registry.is_ok(), deploy.is_ok()]
    }
}

async fn login(auth: SocketAddr) -> String {
    AuthServiceClient::new(channel(auth).await)
        .login(auth::LoginRequest {
            username: ADMIN.into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner()
        .access_token
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// Revokes `token` on `replica` and waits (at most 1 s) until every verifier refuses
/// it; returns how long that took.
async fn revoke_and_time(
    stack: &Stack,
    verifiers: &Verifiers,
    replica: &AuthServiceClient<Channel>,
    admin: &str,
    token: &str,
) -> Duration {
    let id = claims_of(token)["jti"].as_str().unwrap().to_owned();
    replica
        .clone()
        .revoke_tokens(bearer(auth::RevokeTokensRequest { ids: vec![id] }, admin))
        .await
        .expect("revoking");
    let revoked_at = Instant::now();
    loop {
        let seen = verifiers.accepting(stack, token).await;
        if seen == [false; 3] {
            return revoked_at.elapsed();
        }
        assert!(
            revoked_at.elapsed() <= Duration::from_secs(1),
            "still accepted after 1 s by {seen:?} (gateway, registry, deploy)\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_key_rotated_on_one_replica_is_accepted_everywhere_at_once(backend: Backend) {
    let mut stack = Stack::start(backend).await;
    let replicas = replicas(&mut stack);
    let (a, b) = (replicas[0], *replicas.last().unwrap());
    let verifiers = Verifiers::new(&stack).await;
    let old = login(a).await;
    // Short-lived, signed with the old key: it must outlive the rotation, not its exp.
    let short = attenuated(
        a,
        &old,
        auth::AttenuateTokenRequest {
            lifetime_seconds: 3,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(verifiers.accepting(&stack, &old).await, [true; 3], "{}", stack.logs());

    let rotated = AuthServiceClient::new(channel(b).await)
        .rotate_keys(bearer(auth::RotateKeysRequest {}, &old))
        .await
        .expect("rotating on replica B")
        .into_inner()
        .kid;
    assert_ne!(rotated, kid(&old));
    let new = login(b).await;
    assert_eq!(kid(&new), rotated, "B signs with the key it rotated in");
    // From its first use, without any wait: every verifier fetches the unknown key.
    assert_eq!(verifiers.accepting(&stack, &new).await, [true; 3], "{}", stack.logs());
    let who = AuthServiceClient::new(channel(a).await)
        .who_am_i(bearer(auth::WhoAmIRequest {}, &new))
        .await
        .expect("replica A accepts B's new key at once");
    assert_eq!(who.into_inner().name, ADMIN);
    // Tokens of the retired key verify until they expire.
    assert_eq!(verifiers.accepting(&stack, &old).await, [true; 3]);
    assert_eq!(verifiers.accepting(&stack, &short).await, [true; 3]);
    wait_until(Duration::from_secs(15), async || {
        match verifiers.accepting(&stack, &short).await {
            [false, false, false] => Ok(()),
            seen => Err(format!("the expired token is still accepted: {seen:?}")),
        }
    })
    .await;
    // Replica A signs with the new key too, once told of the rotation.
    wait_until(Duration::from_secs(15), async || {
        let token = login(a).await;
        if kid(&token) == rotated {
            Ok(())
        } else {
            Err("replica A still signs with the old key".to_owned())
        }
    })
    .await;
    let jwks = AuthServiceClient::new(channel(a).await)
        .get_jwks(auth::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let kids: Vec<String> = jwks.keys.into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, [kid(&old), rotated]);

    // Rotations at once on both replicas: each claims a generation of its own.
    let rotate = |replica: SocketAddr| {
        let token = new.clone();
        async move {
            AuthServiceClient::new(channel(replica).await)
                .rotate_keys(bearer(auth::RotateKeysRequest {}, &token))
                .await
                .expect("rotating")
                .into_inner()
                .kid
        }
    };
    let (one, two) = tokio::join!(rotate(a), rotate(b));
    assert_ne!(one, two);
    let generations: Vec<i64> = keys::rows(&stack.database_url("auth"))
        .await
        .iter()
        .map(|k| k.generation)
        .collect();
    assert_eq!(generations, [1, 2, 3, 4]);
}

async fn revocations_on_any_replica_reach_every_verifier_within_a_second(backend: Backend) {
    const TOKENS: usize = 100;
    let mut stack = Stack::start(backend).await;
    let replicas = replicas(&mut stack);
    let verifiers = Verifiers::new(&stack).await;
    let admin = login(replicas[0]).await;
    let mut tokens = Vec::with_capacity(TOKENS);
    for i in 0..TOKENS {
        let replica = replicas[i % replicas.len()];
        tokens.push(attenuated(replica, &admin, auth::AttenuateTokenRequest::default()).await);
    }
    let clients: Vec<AuthServiceClient<Channel>> = clients_of(&replicas).await;
    let mut latencies = Vec::with_capacity(TOKENS);
    for (i, token) in tokens.iter().enumerate() {
        assert_eq!(verifiers.accepting(&stack, token).await, [true; 3], "token {i}");
        let replica = &clients[i % clients.len()];
        latencies.push(revoke_and_time(&stack, &verifiers, replica, &admin, token).await);
    }
    latencies.sort();
    println!(
        "revocation to refusal by every verifier ({TOKENS} tokens, {} replica(s), {backend:?}): p50 {:?}, p95 {:?}, \
         max {:?}",
        replicas.len(),
        latencies[TOKENS / 2],
        latencies[TOKENS * 95 / 100],
        latencies[TOKENS - 1]
    );
}

async fn clients_of(replicas: &[SocketAddr]) -> Vec<AuthServiceClient<Channel>> {
    let mut clients = Vec::new();
    for replica in replicas {
        clients.push(AuthServiceClient::new(channel(*replica).await));
    }
    clients
}

async fn the_kek_is_required_and_no_private_key_is_stored_in_the_clear(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let response = stack
        .http
        .post(stack.url("/v1/keys/rotate"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Every row: a public key and a sealed private key, never the private key itself
    // (raw, base64 or PKCS#8), and the sealed one opens only with the KEK.
    let url = stack.database_url("auth");
    let kek_file = stack.dir.path().join("auth-kek");
    let rows = keys::rows(&url).await;
    assert_eq!(rows.len(), 2);
    let kek = auth_service::kek::Kek::load(&kek_file).unwrap();
    for row in &rows {
        let sealed = STANDARD.decode(&row.sealed_private_key).unwrap();
        let seed = kek.open(&row.kid, &sealed).expect("the KEK opens the key");
        let seed: [u8; 32] = secrecy::ExposeSecret::expose_secret(&seed)
            .as_slice()
            .try_into()
            .unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        assert_eq!(common::token::key_id(&key.verifying_key()), row.kid);
        let stored = format!("{row:?} {} {}", row.public_key, row.sealed_private_key);
        for clear in [
            STANDARD.encode(seed),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed),
        ] {
            assert!(!stored.contains(&clear), "a private key in the clear");
        }
        assert!(!sealed.windows(32).any(|w| w == seed), "a private key in the clear");
    }
    assert_eq!(
        kid(&stack.admin_token().await),
        rows[1].kid,
        "the newest generation signs"
    );
    assert_eq!(
        keys::current_signing_key(&url, &kek_file)
            .await
            .verifying_key()
            .as_bytes()
            .len(),
        32
    );

    // A wrong KEK, or none: the replica refuses to start, saying why.
    let wrong = stack.dir.path().join("wrong-kek");
    auth_service::kek::Kek::create_if_missing(&wrong).unwrap();
    for (name, kek, why) in [
        ("auth-wrong-kek", Some(wrong.as_path()), "does not open signing key"),
        ("auth-no-kek", None, "no key-encryption key"),
    ] {
        let (mut proc, _) = stack.spawn_auth_replica(name, kek);
        let status = wait_until(Duration::from_secs(30), async || match proc.child.try_wait() {
            Ok(Some(status)) => Ok(status),
            _ => Err(format!("{name} is still running:\n{}", proc.log_text())),
        })
        .await;
        assert!(!status.success(), "{name}: {status}");
        let log = proc.log_text();
        assert!(log.contains(why), "{name}: {log}");
        assert!(!log.contains(&std::fs::read_to_string(&wrong).unwrap().trim().to_owned()));
    }
    // The keys are as they were.
    assert_eq!(keys::rows(&url).await.len(), 2);
}

/// A deployment from before the database held the keys: its key files in `auth-keys/`
/// of the data dir are imported at the first start, so its tokens stay valid.
async fn keys_of_the_old_keys_dir_are_imported_and_their_tokens_stay_valid(backend: Backend) {
    let old = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let stack = Stack::builder(backend)
        .services(|services| {
            // The services dir lies in the data dir the auth service is given.
            let keys_dir = services.parent().unwrap().join("auth-keys");
            std::fs::create_dir(&keys_dir).unwrap();
            std::fs::write(keys_dir.join("000001.ed25519"), old.to_bytes()).unwrap();
        })
        .start()
        .await;
    let token = tests::stack::sign(&old, &tests::user_claims(ADMIN));
    let me = stack
        .http
        .get(stack.url("/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "{}", stack.logs());
    assert_eq!(kid(&stack.admin_token().await), kid(&token), "the imported key signs");
    let rows = keys::rows(&stack.database_url("auth")).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kid, kid(&token));
    assert!(stack.log("auth").contains("imported"));
}

/// PostgreSQL: the listening connections of both replicas are cut (notices sent
/// meanwhile are lost) before each revocation made on B; the verifiers, which follow
/// A, still refuse each within a second, and A listens again.
async fn listening_connections_drop() {
    use sea_orm::{ConnectionTrait, Database};
    let mut stack = Stack::start(Backend::Postgres).await;
    let b = stack.add_auth_replica("auth-b");
    let verifiers = Verifiers::new(&stack).await;
    let admin = login(stack.auth).await;
    let on_b = AuthServiceClient::new(channel(b).await);
    let db = Database::connect(stack.database_url("auth")).await.unwrap();
    for i in 0..10 {
        let token = attenuated(stack.auth, &admin, auth::AttenuateTokenRequest::default()).await;
        assert_eq!(verifiers.accepting(&stack, &token).await, [true; 3], "token {i}");
        let cut = db
            .execute_unprepared(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
            )
            .await
            .unwrap();
        assert!(cut.rows_affected() >= 1, "no listening connection found");
        revoke_and_time(&stack, &verifiers, &on_b, &admin, &token).await;
    }
    let log = stack.log("auth");
    assert!(log.contains("the listening connection was lost"), "{log}");
    wait_until(Duration::from_secs(10), async || {
        let log = stack.log("auth");
        match log.contains("listening for revocations and key rotations again") {
            true => Ok(()),
            false => Err(format!("A does not listen again:\n{log}")),
        }
    })
    .await;
}
