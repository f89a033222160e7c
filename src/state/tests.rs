use super::*;

fn record(name: &str) -> ClusterRecord {
    let spec = crate::spec::parse(
        &format!(
            "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec: {{provider: eks}}\n"
        ),
        "t",
    )
    .unwrap();
    ClusterRecord {
        name: name.into(),
        provider: Provider::Eks,
        region: Some("us-east-1".into()),
        kubernetes_version: "1.33".into(),
        phases: vec![Phase::Network],
        status: "applied".into(),
        spec,
        outputs: BTreeMap::new(),
        created_at: now(),
        updated_at: now(),
        kforge_version: "test".into(),
    }
}

fn local(dir: &Path) -> StateStore {
    StateStore::Local {
        root: dir.join("state"),
    }
}

#[tokio::test]
async fn local_round_trip_with_private_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = local(tmp.path());
    assert!(store.get("a").await.unwrap().is_none());
    store.put(&record("a")).await.unwrap();
    store.put(&record("b")).await.unwrap();
    assert_eq!(
        store.get("a").await.unwrap().unwrap(),
        record("a").clone_with_times(&store.get("a").await.unwrap().unwrap())
    );
    let names: Vec<String> = store.list().await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["a", "b"]);
    let file = tmp.path().join("state/clusters/a/cluster.json");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    for dir in ["state", "state/clusters", "state/clusters/a"] {
        assert_eq!(
            std::fs::metadata(tmp.path().join(dir)).unwrap().permissions().mode() & 0o777,
            0o700,
            "{dir}"
        );
    }
    store.remove("a").await.unwrap();
    assert!(store.get("a").await.unwrap().is_none());
    assert!(!tmp.path().join("state/clusters/a").exists());
}

impl ClusterRecord {
    fn clone_with_times(&self, other: &ClusterRecord) -> ClusterRecord {
        ClusterRecord {
            created_at: other.created_at.clone(),
            updated_at: other.updated_at.clone(),
            ..self.clone()
        }
    }
}

#[tokio::test]
async fn an_existing_root_keeps_its_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mine");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = StateStore::Local { root: root.clone() };
    store.put(&record("a")).await.unwrap();
    assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(
        std::fs::metadata(root.join("clusters/a")).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[tokio::test]
async fn second_lock_is_refused_until_released() {
    let tmp = tempfile::tempdir().unwrap();
    let store = local(tmp.path());
    let lock = store.lock("a", "kforge apply", false).await.unwrap();
    let err = store.lock("a", "kforge delete", false).await.err().unwrap();
    let msg = err.to_string();
    assert!(
        matches!(err.downcast_ref::<StateError>(), Some(StateError::Locked { .. })),
        "{msg}"
    );
    assert!(msg.contains("kforge apply") && msg.contains("--force-unlock"), "{msg}");
    lock.release().await.unwrap();
    let again = store.lock("a", "kforge delete", false).await.unwrap();
    // --force-unlock breaks a live lock; the original holder's release then leaves the new lock alone.
    let forced = store.lock("a", "kforge apply", true).await.unwrap();
    again.release().await.unwrap();
    assert!(store.lock("a", "x", false).await.is_err());
    forced.release().await.unwrap();
}

#[tokio::test]
async fn lock_of_a_dead_process_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let store = local(tmp.path());
    let dead = LockInfo {
        id: "x".into(),
        host: hostname(),
        pid: 999_999_999,
        command: "kforge apply".into(),
        acquired_at: now(),
        generation: Some("g-crashed".into()),
    };
    store
        .create_exclusive(&store.key("a", "lock"), &serde_json::to_vec(&dead).unwrap())
        .await
        .unwrap();
    let lock = store.lock("a", "kforge apply", false).await.unwrap();
    // The heir creates under the crashed run's generation, and passes it on if it crashes too.
    assert_eq!(lock.generation(), "g-crashed");
    let written: LockInfo =
        serde_json::from_slice(&store.read(&store.key("a", "lock")).await.unwrap().unwrap()).unwrap();
    assert_eq!(written.generation.as_deref(), Some("g-crashed"));
    lock.release().await.unwrap();
    // A run after a clean release starts a generation of its own.
    let next = store.lock("a", "kforge apply", false).await.unwrap();
    assert_ne!(next.generation(), "g-crashed");
    assert_eq!(next.generation(), next.id);
    next.release().await.unwrap();
}

/// Two runs racing for one stale lock (here: two tasks of this process, each with its own guard descriptor,
/// on two runtime threads): exactly one takes it over, the other is told the winner holds it. 20 rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_takeovers_of_a_stale_lock_have_exactly_one_winner() {
    let tmp = tempfile::tempdir().unwrap();
    let store = local(tmp.path());
    for round in 0..20 {
        let dead = LockInfo {
            id: format!("dead-{round}"),
            host: hostname(),
            pid: 999_999_999,
            command: "kforge apply".into(),
            acquired_at: now(),
            generation: None,
        };
        let path = tmp.path().join("state").join(store.key("a", "lock"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        crate::fsutil::write_private(&path, &serde_json::to_vec(&dead).unwrap()).unwrap();
        let (a, b) = (store.clone(), store.clone());
        let (one, two) = tokio::join!(
            tokio::spawn(async move { a.lock("a", "kforge apply", false).await }),
            tokio::spawn(async move { b.lock("a", "kforge apply", false).await })
        );
        let results = [one.unwrap(), two.unwrap()];
        let winners: Vec<&StateLock> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        match loser.downcast_ref::<StateError>() {
            Some(StateError::Locked { holder, .. }) => assert_eq!(holder.id, winners[0].id, "round {round}"),
            _ => panic!("round {round}: {loser}"),
        }
        for lock in results.into_iter().flatten() {
            lock.release().await.unwrap();
        }
    }
}

#[test]
fn s3_urls() {
    let aws = || -> Arc<Aws> { unreachable!("not needed for a local path") };
    assert!(matches!(
        StateStore::from_location(Some("/tmp/x"), aws),
        Ok(StateStore::Local { .. })
    ));
    let e = StateStore::from_location(Some("s3:///x"), aws).err().unwrap();
    assert!(e.to_string().contains("s3://BUCKET/PREFIX"));
}
