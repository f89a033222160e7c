use super::*;

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_master_leaves_only_while_etcd_keeps_quorum() {
    let three = names(&["m1", "m2", "m3"]);
    assert_eq!(master_removal_problem(&three, &[], &[]), None);
    assert_eq!(master_removal_problem(&three, &names(&["m3"]), &[]), None);
    assert_eq!(master_removal_problem(&three, &names(&["m2", "m3"]), &[]), None);
    // The members that leave may be the broken ones.
    assert_eq!(
        master_removal_problem(&three, &names(&["m2", "m3"]), &names(&["m3"])),
        None
    );
    let unhealthy = master_removal_problem(&three, &names(&["m2", "m3"]), &names(&["m1"])).unwrap();
    assert!(unhealthy.contains("m1") && unhealthy.contains("quorum"), "{unhealthy}");
    let last = master_removal_problem(&three, &three, &[]).unwrap();
    assert!(last.contains("no master would be left"), "{last}");
}

#[test]
fn unhealthy_members_are_read_from_etcdctl() {
    let members: Vec<Member> = (1..=3)
        .map(|i| Member {
            name: format!("m{i}"),
            address: format!("10.0.0.{i}").parse().unwrap(),
        })
        .collect();
    let out = "https://10.0.0.1:2379 is healthy: successfully committed proposal: took = 2ms\n\
               https://10.0.0.3:2379 is healthy: successfully committed proposal: took = 3ms\n\
               https://10.0.0.2:2379 is unhealthy: failed to commit proposal: context deadline exceeded\n";
    assert_eq!(unhealthy_members(out, &members), ["m2"]);
}
