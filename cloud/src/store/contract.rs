//! The [`Store`] contract, as one test body run against every implementation: what each
//! method returns, refuses and keeps.

use std::collections::BTreeMap;

use edgefn_schema::api::{Provenance, StatusReport};

use super::*;

/// A draft naming `bundles` (function → digest) and `secrets`.
pub(crate) fn draft(bundles: &[(&str, &str)], secrets: &[(&str, u64)], created_ms: u64) -> Draft {
    Draft {
        manifest: format!("# revision made at {created_ms}\n"),
        bundles: bundles
            .iter()
            .map(|(f, d)| ((*f).to_owned(), (*d).to_owned()))
            .collect(),
        layers: Default::default(),
        models: Default::default(),
        provenance: Provenance {
            commit: Some("0123abcd".into()),
            message: Some("a change".into()),
            ..Provenance::default()
        },
        rollback_of: None,
        created_ms,
        secrets: secrets.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect(),
        signatures: None,
    }
}

fn report(json: &str) -> StatusReport {
    serde_json::from_str(json).expect("report")
}

/// Runs the contract against `store`, which must be empty.
pub(crate) fn check(store: &dyn Store) {
    // Bundles.
    let a = "a".repeat(64);
    let b = "b".repeat(64);
    assert!(!store.has_bundle(&a).expect("has"));
    assert_eq!(store.bundle(&a).expect("bundle"), None);
    assert!(store.put_bundle(&a, b"bundle a").expect("put"));
    assert!(
        !store.put_bundle(&a, b"bundle a").expect("put again"),
        "already stored"
    );
    assert!(store.has_bundle(&a).expect("has"));
    assert_eq!(
        store.bundle(&a).expect("bundle").as_deref(),
        Some(&b"bundle a"[..])
    );

    // Revisions: missing bundles refused, nothing committed.
    assert_eq!(store.latest().expect("latest"), None);
    match store.commit_rollout(draft(&[("f", &a), ("g", &b)], &[], 1), Some(0), &mut |_| {
        None
    }) {
        Err(StoreError::MissingBundles(m)) => assert_eq!(m, vec![b.clone()]),
        other => panic!("missing bundle: {other:?}"),
    }
    assert_eq!(store.latest().expect("latest"), None);
    let r1 = store
        .commit_rollout(draft(&[("f", &a)], &[], 10), Some(0), &mut |_| None)
        .expect("commit 1");
    assert_eq!((r1.summary.number, r1.summary.parent), (1, 0));
    assert_eq!(store.latest().expect("latest").as_ref(), Some(&r1));
    assert_eq!(store.revision(1).expect("rev").as_ref(), Some(&r1));
    assert_eq!(store.revision(2).expect("rev"), None);
    match store.commit_rollout(draft(&[("f", &a)], &[], 11), Some(0), &mut |_| None) {
        Err(StoreError::Conflict { latest, expected }) => assert_eq!((latest, expected), (1, 0)),
        other => panic!("conflict: {other:?}"),
    }
    // A rollout record committed with its revision; none without.
    assert_eq!(store.rollout().expect("rollout"), None);
    let mut seen = 0;
    let r2 = store
        .commit_rollout(draft(&[("f", &a)], &[], 20), Some(1), &mut |r| {
            seen = r.summary.number;
            Some(format!("{{\"revision\":{}}}", r.summary.number).into_bytes())
        })
        .expect("commit 2");
    assert_eq!(seen, 2);
    assert_eq!(
        store.rollout().expect("rollout").as_deref(),
        Some(&b"{\"revision\":2}"[..])
    );
    store.put_rollout(b"{\"revision\":2,\"x\":1}").expect("put");
    assert_eq!(
        store.rollout().expect("rollout").as_deref(),
        Some(&b"{\"revision\":2,\"x\":1}"[..])
    );
    // No expected parent: on top of whatever is latest.
    let r3 = store
        .commit_rollout(draft(&[("f", &a)], &[], 30), None, &mut |_| None)
        .expect("commit 3");
    assert_eq!((r3.summary.number, r3.summary.parent), (3, 2));
    let history = store.history(2).expect("history");
    assert_eq!(
        history,
        vec![r3.summary.clone(), r2.summary.clone()],
        "newest first, at most the limit"
    );
    assert_eq!(store.history(100).expect("history").len(), 3);
    assert_eq!(store.history(100).expect("history")[2], r1.summary);

    // Secrets: versions numbered from 1, the last `keep` kept, a removal keeps the counter.
    assert_eq!(store.secret("db").expect("secret"), None);
    match store.commit_rollout(draft(&[("f", &a)], &[("db", 1)], 40), Some(3), &mut |_| {
        None
    }) {
        Err(StoreError::SecretsUnavailable { not_set, gone }) => {
            assert_eq!(
                (not_set, gone),
                (vec!["db".to_owned()], Vec::<String>::new())
            );
        }
        other => panic!("secret not set: {other:?}"),
    }
    for v in 1..=4u64 {
        let got = store
            .put_secret("db", 100 + v, 3, &mut |n| vec![n as u8; 4])
            .expect("put secret");
        assert_eq!(got, v);
    }
    let db = store.secret("db").expect("secret").expect("some");
    assert_eq!(db.last, 4);
    assert_eq!(
        db.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(db.latest().map(|v| v.created_ms), Some(104));
    {
        use base64::Engine as _;
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&db.version(3).expect("v3").sealed)
                .expect("base64"),
            vec![3u8; 4]
        );
    }
    match store.commit_rollout(
        draft(&[("f", &a)], &[("db", 1), ("api", 1)], 40),
        Some(3),
        &mut |_| None,
    ) {
        Err(StoreError::SecretsUnavailable { not_set, gone }) => {
            assert_eq!(not_set, vec!["api".to_owned()]);
            assert_eq!(gone, vec!["db@1".to_owned()]);
        }
        other => panic!("secret gone: {other:?}"),
    }
    let r4 = store
        .commit_rollout(draft(&[("f", &a)], &[("db", 4)], 40), Some(3), &mut |_| {
            None
        })
        .expect("commit with a secret");
    assert_eq!(r4.secrets, BTreeMap::from([("db".to_owned(), 4)]));
    store
        .put_secret("api", 5, 3, &mut |_| b"x".to_vec())
        .expect("api");
    assert!(store.remove_secret("db").expect("remove"));
    assert!(!store.remove_secret("db").expect("remove again"));
    assert!(!store.remove_secret("never").expect("remove unknown"));
    let db = store.secret("db").expect("secret").expect("kept");
    assert_eq!((db.last, db.versions.len()), (4, 0));
    assert_eq!(
        store
            .put_secret("db", 200, 3, &mut |_| b"y".to_vec())
            .expect("again"),
        5,
        "a version number names one value forever"
    );
    let names: Vec<String> = store
        .secrets()
        .expect("secrets")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["api".to_owned(), "db".to_owned()]);

    // Devices.
    let dev = |name: &str, h: u8| DeviceRecord {
        name: name.into(),
        token_hash: [h; 32],
        registered_ms: 7,
        mqtt_hash: (h == 2).then(|| "$7$hash".to_owned()),
    };
    store.add_device(&dev("gw-01", 1)).expect("add");
    store.add_device(&dev("gw-02", 2)).expect("add");
    assert!(matches!(
        store.add_device(&dev("gw-01", 3)),
        Err(StoreError::DeviceExists(n)) if n == "gw-01"
    ));
    let mut devices = store.devices().expect("devices");
    devices.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(devices, vec![dev("gw-01", 1), dev("gw-02", 2)]);

    // Reports, in batches; the last one wins.
    let running = report(r#"{"state":"running","runningRevision":3}"#);
    let failed = report(r#"{"state":"failed","message":"oops"}"#);
    store
        .put_statuses(&[
            ("gw-01".into(), failed.clone(), 50),
            ("gw-02".into(), running.clone(), 51),
        ])
        .expect("statuses");
    store
        .put_statuses(&[("gw-01".into(), running.clone(), 60)])
        .expect("statuses");
    let statuses = store.statuses().expect("statuses");
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses["gw-01"], (running.clone(), 60));
    assert_eq!(statuses["gw-02"], (running, 51));
    assert!(store.remove_device("gw-01").expect("remove"));
    assert!(!store.remove_device("gw-01").expect("remove again"));
    assert_eq!(store.devices().expect("devices"), vec![dev("gw-02", 2)]);
    assert_eq!(
        store.device("gw-02").expect("device"),
        Some(dev("gw-02", 2))
    );
    assert_eq!(store.device("gw-01").expect("device"), None);
    assert!(
        !store.statuses().expect("statuses").contains_key("gw-01"),
        "a removed device's report goes with it"
    );

    // Admin tokens: added once, the last one never revoked.
    let token = |h: u8, name: &str| AdminTokenRecord {
        hash: [h; 32],
        name: name.into(),
        created_ms: 1,
        revoked_ms: None,
    };
    store.add_admin_token(&token(1, "a")).expect("add");
    store
        .add_admin_token(&token(1, "renamed"))
        .expect("add again");
    store.add_admin_token(&token(2, "b")).expect("add");
    let mut tokens = store.admin_tokens().expect("tokens");
    tokens.sort_by_key(|t| t.hash);
    assert_eq!(tokens, vec![token(1, "a"), token(2, "b")]);
    assert_eq!(
        store
            .revoke_admin_token(&token(1, "a").id(), 9)
            .expect("revoke"),
        Some(Revoked::Done([1; 32]))
    );
    assert_eq!(
        store
            .revoke_admin_token(&token(1, "a").id(), 9)
            .expect("again"),
        None
    );
    assert_eq!(
        store
            .revoke_admin_token(&token(2, "b").id(), 9)
            .expect("last"),
        Some(Revoked::Last)
    );
    let revoked = store
        .admin_tokens()
        .expect("tokens")
        .into_iter()
        .find(|t| t.hash == [1; 32])
        .expect("kept");
    assert_eq!(revoked.revoked_ms, Some(9));

    // The key check.
    assert_eq!(store.key_check().expect("check"), None);
    store.set_key_check(b"sealed").expect("set");
    assert_eq!(
        store.key_check().expect("check").as_deref(),
        Some(&b"sealed"[..])
    );

    // Console sessions: found by the hash of their cookie's value while they last; at most
    // `max` kept, the oldest ending first; expired ones take no room; ended one at a time
    // (sign-out) or all of one admin token's at once (revoked).
    let session = |id: u8, token: u8, created_ms: u64| ConsoleSession {
        id_hash: [id; 32],
        token_hash: [token; 32],
        csrf: format!("csrf-{id}"),
        created_ms,
        expires_ms: created_ms + 1000,
    };
    let found = |id: u8, now: u64| {
        store
            .console_session(&[id; 32], now)
            .expect("session")
            .map(|s| s.id_hash[0])
    };
    assert_eq!(store.console_session(&[1; 32], 0).expect("none"), None);
    for (id, token, at) in [(1, 1, 100), (2, 1, 200), (3, 2, 300)] {
        store
            .put_console_session(&session(id, token, at), 3, at)
            .expect("put");
    }
    assert_eq!(
        store.console_session(&[1; 32], 500).expect("get"),
        Some(session(1, 1, 100))
    );
    assert_eq!(found(1, 1100), None, "expired");
    assert_eq!(found(9, 500), None, "unknown");
    store
        .put_console_session(&session(4, 2, 400), 3, 400)
        .expect("put");
    assert_eq!(
        [1, 2, 3, 4].map(|i| found(i, 450)),
        [None, Some(2), Some(3), Some(4)],
        "the oldest ended to keep 3"
    );
    // At 1250, session 2 (ends at 1200) has expired: it takes no room, 3 stays.
    store
        .put_console_session(&session(5, 1, 1250), 3, 1250)
        .expect("put");
    assert_eq!(
        [2, 3, 4, 5].map(|i| found(i, 1250)),
        [None, Some(3), Some(4), Some(5)]
    );
    store
        .put_console_session(&session(6, 1, 1260), 3, 1260)
        .expect("put");
    assert_eq!(
        [3, 4, 5, 6].map(|i| found(i, 1260)),
        [None, Some(4), Some(5), Some(6)]
    );
    assert_eq!(
        store.remove_console_sessions_of(&[2; 32]).expect("revoked"),
        1
    );
    assert_eq!(found(4, 1260), None, "its admin token was revoked");
    assert!(store.remove_console_session(&[5; 32]).expect("sign out"));
    assert!(!store.remove_console_session(&[5; 32]).expect("again"));
    assert_eq!([5, 6].map(|i| found(i, 1260)), [None, Some(6)]);
}

#[test]
fn the_local_store_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("dir");
    check(&LocalStore::open(dir.path()).expect("open"));
}
