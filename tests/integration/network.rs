//! The network phase against moto: what create builds, that a re-apply changes nothing, and that delete leaves
//! nothing behind, with or without local state.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, VpcAttributeName};
use serde_json::Value;

use crate::support::{TestEnv, example, rt, s};

/// The fully defaulted spec of an example, as kforge computes it.
fn defaulted(env: &TestEnv, file: &str) -> Value {
    let o = env.ok(&["create", "cluster", "-f", s(&example(file)), "--dry-run", "-o", "json"]);
    serde_json::from_str(&o.stdout).unwrap()
}

fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap_or_default().to_string()))
        .collect()
}

/// Checks every network resource of a created example against its defaulted spec.
fn assert_network_matches(env: &TestEnv, spec: &Value) {
    let name = spec["metadata"]["name"].as_str().unwrap();
    let region = spec["spec"]["region"].as_str().unwrap();
    let net = &spec["spec"]["network"];
    let user_tags = spec["spec"]["tags"].as_object().cloned().unwrap_or_default();
    let ec2 = env.ec2(region);
    let by_cluster = || Filter::builder().name("tag:kforge.dev/cluster").values(name).build();
    let check_tags = |tags: &BTreeMap<String, String>, logical: &str| {
        assert_eq!(tags["kforge.dev/cluster"], name);
        assert_eq!(tags["kforge.dev/resource"], logical);
        assert_eq!(tags["kforge.dev/managed-by"], "kforge");
        assert_eq!(tags[&format!("kubernetes.io/cluster/{name}")], "owned");
        for (k, v) in &user_tags {
            assert_eq!(&tags[k], v.as_str().unwrap(), "user tag {k} on {logical}");
        }
    };
    rt().block_on(async {
        let vpcs = ec2.describe_vpcs().filters(by_cluster()).send().await.unwrap();
        assert_eq!(vpcs.vpcs().len(), 1, "{name}: exactly one VPC");
        let vpc = &vpcs.vpcs()[0];
        let vpc_id = vpc.vpc_id().unwrap();
        assert_eq!(vpc.cidr_block().unwrap(), net["vpcCidr"].as_str().unwrap());
        check_tags(&tags_of(vpc.tags()), "vpc");
        for attr in [VpcAttributeName::EnableDnsSupport, VpcAttributeName::EnableDnsHostnames] {
            let a = ec2
                .describe_vpc_attribute()
                .vpc_id(vpc_id)
                .attribute(attr.clone())
                .send()
                .await
                .unwrap();
            let on = a
                .enable_dns_support()
                .or(a.enable_dns_hostnames())
                .and_then(|v| v.value())
                .unwrap();
            assert!(on, "{name}: {attr:?} on");
        }

        let igws = ec2
            .describe_internet_gateways()
            .filters(by_cluster())
            .send()
            .await
            .unwrap();
        assert_eq!(igws.internet_gateways().len(), 1);
        let igw = &igws.internet_gateways()[0];
        assert_eq!(igw.attachments()[0].vpc_id(), Some(vpc_id), "IGW attached to the VPC");

        let subnets = ec2.describe_subnets().filters(by_cluster()).send().await.unwrap();
        let want_subnets = net["subnets"].as_array().unwrap();
        assert_eq!(
            subnets.subnets().len(),
            want_subnets.len(),
            "{name}: one subnet per zone and type"
        );
        let mut subnet_ids = BTreeMap::new();
        for want in want_subnets {
            let (zone, kind) = (want["zone"].as_str().unwrap(), want["type"].as_str().unwrap());
            let logical = format!("subnet/{kind}-{zone}");
            let got = subnets
                .subnets()
                .iter()
                .find(|x| tags_of(x.tags()).get("kforge.dev/resource") == Some(&logical))
                .unwrap_or_else(|| panic!("{name}: {logical} missing"));
            assert_eq!(
                got.cidr_block().unwrap(),
                want["cidr"].as_str().unwrap(),
                "{logical} CIDR"
            );
            assert_eq!(got.availability_zone().unwrap(), zone);
            assert_eq!(got.vpc_id().unwrap(), vpc_id);
            let tags = tags_of(got.tags());
            check_tags(&tags, &logical);
            let role = if kind == "public" {
                "kubernetes.io/role/elb"
            } else {
                "kubernetes.io/role/internal-elb"
            };
            assert_eq!(tags[role], "1", "{logical} has the load-balancer role tag");
            assert_eq!(
                got.map_public_ip_on_launch(),
                Some(kind == "public"),
                "{logical} public IPs"
            );
            subnet_ids.insert(
                (zone.to_string(), kind.to_string()),
                got.subnet_id().unwrap().to_string(),
            );
        }

        let nats = ec2.describe_nat_gateways().filter(by_cluster()).send().await.unwrap();
        let zones: Vec<&str> = net["zones"]
            .as_array()
            .unwrap()
            .iter()
            .map(|z| z.as_str().unwrap())
            .collect();
        let nat_zones: Vec<&str> = match net["natGateways"].as_str().unwrap() {
            "perZone" => zones.clone(),
            "single" => zones[..1].to_vec(),
            _ => vec![],
        };
        assert_eq!(
            nats.nat_gateways().len(),
            nat_zones.len(),
            "{name}: NAT gateways per the spec"
        );
        let mut nat_of_zone = BTreeMap::new();
        for z in &nat_zones {
            let nat = nats
                .nat_gateways()
                .iter()
                .find(|n| tags_of(n.tags()).get("kforge.dev/resource") == Some(&format!("nat/{z}")))
                .unwrap();
            assert_eq!(
                nat.subnet_id().unwrap(),
                subnet_ids[&(z.to_string(), "public".to_string())],
                "NAT in the public subnet"
            );
            let eip = nat.nat_gateway_addresses()[0].allocation_id().unwrap();
            let addr = ec2.describe_addresses().allocation_ids(eip).send().await.unwrap();
            check_tags(&tags_of(addr.addresses()[0].tags()), &format!("eip/nat-{z}"));
            nat_of_zone.insert(z.to_string(), nat.nat_gateway_id().unwrap().to_string());
        }

        let tables = ec2.describe_route_tables().filters(by_cluster()).send().await.unwrap();
        let table = |logical: &str| {
            tables
                .route_tables()
                .iter()
                .find(|t| tags_of(t.tags()).get("kforge.dev/resource").map(String::as_str) == Some(logical))
                .unwrap_or_else(|| panic!("{name}: {logical} missing"))
        };
        let default_route = |t: &aws_sdk_ec2::types::RouteTable| {
            t.routes()
                .iter()
                .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
                .cloned()
        };
        let public = table("rtb/public");
        assert_eq!(
            default_route(public).unwrap().gateway_id(),
            igw.internet_gateway_id(),
            "public default route"
        );
        for ((zone, kind), subnet_id) in &subnet_ids {
            let t = if kind == "public" {
                public
            } else {
                table(&format!("rtb/private-{zone}"))
            };
            assert!(
                t.associations()
                    .iter()
                    .any(|a| a.subnet_id() == Some(subnet_id.as_str())),
                "{kind} subnet in {zone} associated with its table"
            );
            if kind == "private" {
                let want_nat = match nat_zones.len() {
                    0 => None,
                    1 => Some(&nat_of_zone[nat_zones[0]]),
                    _ => Some(&nat_of_zone[zone]),
                };
                let got = default_route(t).and_then(|r| r.nat_gateway_id().map(str::to_string));
                assert_eq!(got.as_ref(), want_nat, "private route of {zone}");
            }
        }
    });
}

#[test]
fn network_phase_of_each_example_builds_every_resource() {
    let env = TestEnv::new();
    for file in ["eks-minimal.yaml", "eks-gpu-spot.yaml", "selfbuilt-ha.yaml"] {
        let spec = defaulted(&env, file);
        let o = env.ok(&["create", "cluster", "-f", s(&example(file)), "--phase", "network"]);
        assert!(
            o.stdout.contains("vpc"),
            "{file}: result table on stdout:\n{}",
            o.stdout
        );
        assert_network_matches(&env, &spec);
    }
    let o = env.ok(&["get", "clusters", "-o", "json"]);
    let rows: Value = serde_json::from_str(&o.stdout).unwrap();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["eks-minimal", "ml-gpu", "selfbuilt-ha"]);
}

#[test]
fn reapply_of_an_unchanged_spec_makes_no_mutating_call() {
    let env = TestEnv::new();
    let spec = example("eks-gpu-spot.yaml");
    env.ok(&["create", "cluster", "-f", s(&spec), "--phase", "network"]);
    env.proxy.clear_calls();

    let plan = env.run(&["plan", "-f", s(&spec), "--phase", "network", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "no changes: {}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("0 to create, 0 to update in place, 0 to replace"),
        "{}",
        plan.stdout
    );

    env.ok(&["apply", "-f", s(&spec), "--phase", "network"]);
    let calls = env.proxy.calls();
    assert!(!calls.is_empty(), "the re-apply observed the cloud");
    let mutating: Vec<_> = calls
        .iter()
        .filter(|c| c.is_mutating())
        .map(|c| c.action.clone())
        .collect();
    assert!(mutating.is_empty(), "re-apply mutated: {mutating:?}");
}

#[test]
fn plan_shows_changes_and_apply_converges_them() {
    let env = TestEnv::new();
    let spec = example("eks-minimal.yaml");
    let plan = env.run(&[
        "plan",
        "-f",
        s(&spec),
        "--phase",
        "network",
        "--detailed-exitcode",
        "-o",
        "json",
    ]);
    assert_eq!(plan.code, 2, "changes pending: {}", plan.stderr);
    let entries: Value = serde_json::from_str(&plan.stdout).unwrap();
    assert!(entries.as_array().unwrap().iter().all(|e| e["action"] == "create"));
    assert!(env.proxy.calls().iter().all(|c| !c.is_mutating()), "plan never mutates");

    env.ok(&["apply", "-f", s(&spec), "--phase", "network"]);
    // Someone turns DNS hostnames off and changes a tag behind kforge's back: plan shows in-place updates.
    let ec2 = env.ec2("us-east-1");
    rt().block_on(async {
        let vpc = ec2
            .describe_vpcs()
            .filters(
                Filter::builder()
                    .name("tag:kforge.dev/cluster")
                    .values("eks-minimal")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let id = vpc.vpcs()[0].vpc_id().unwrap();
        ec2.modify_vpc_attribute()
            .vpc_id(id)
            .enable_dns_hostnames(
                aws_sdk_ec2::types::AttributeBooleanValue::builder()
                    .value(false)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        ec2.create_tags()
            .resources(id)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("team")
                    .value("someone-else")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    });
    let plan = env.run(&["plan", "-f", s(&spec), "--phase", "network", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{}", plan.stderr);
    assert!(plan.stdout.contains("~ vpc-dns"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("enableDnsHostnames: false -> true"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("~ vpc ("), "{}", plan.stdout);
    assert!(plan.stdout.contains("2 to update in place"), "{}", plan.stdout);
    env.ok(&["apply", "-f", s(&spec), "--phase", "network"]);
    let plan = env.run(&["plan", "-f", s(&spec), "--phase", "network", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "converged: {}", plan.stdout);
}

#[test]
fn immutable_change_is_refused_before_any_mutation() {
    let env = TestEnv::new();
    let spec = example("eks-minimal.yaml");
    env.ok(&["apply", "-f", s(&spec), "--phase", "network"]);
    let moved = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("10.10.0.0/16", "10.11.0.0/16");
    let moved = crate::support::write_spec(env.dir.path(), "moved.yaml", &moved);
    env.proxy.clear_calls();
    let o = env.run(&["apply", "-f", s(&moved), "--phase", "network"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("vpc: changing cidr from 10.10.0.0/16 to 10.11.0.0/16"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("hint:"), "{}", o.stderr);
    assert!(
        env.proxy.calls().iter().all(|c| !c.is_mutating()),
        "refused before acting"
    );
}

#[test]
fn delete_without_local_state_leaves_nothing_and_repeats_cleanly() {
    let env = TestEnv::new();
    let spec = example("eks-gpu-spot.yaml");
    env.ok(&["create", "cluster", "-f", s(&spec), "--phase", "network"]);
    let before = env.tagged("ml-gpu", "us-west-2");
    assert_eq!(before["nat-gateway"], 3);
    std::fs::remove_dir_all(env.state_dir()).unwrap();

    let refused = env.run(&["delete", "cluster", "ml-gpu", "--region", "us-west-2"]);
    assert_eq!(refused.code, 1, "no --yes and no terminal: {}", refused.stderr);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert_eq!(
        env.tagged("ml-gpu", "us-west-2"),
        before,
        "a refused delete deletes nothing"
    );

    let o = env.ok(&[
        "delete",
        "cluster",
        "ml-gpu",
        "--region",
        "us-west-2",
        "--yes",
        "-o",
        "json",
    ]);
    let report: Value = serde_json::from_str(&o.stdout).unwrap();
    let entries = report["entries"].as_array().unwrap();
    assert_eq!(
        entries.len(),
        before.values().sum::<usize>(),
        "the report lists each resource"
    );
    assert!(entries.iter().all(|e| e["result"] == "deleted"), "{report}");
    assert!(
        env.tagged("ml-gpu", "us-west-2").values().all(|n| *n == 0),
        "{:?}",
        env.tagged("ml-gpu", "us-west-2")
    );
    assert_eq!(env.all_non_default("us-west-2")["vpc"], 0, "nothing orphaned");

    let again = env.ok(&["delete", "cluster", "ml-gpu", "--region", "us-west-2", "--yes"]);
    assert!(again.stdout.contains("nothing to delete"), "{}", again.stdout);
}

#[test]
fn delete_by_spec_file_removes_the_state_record() {
    let env = TestEnv::new();
    let spec = example("eks-minimal.yaml");
    env.ok(&["create", "cluster", "-f", s(&spec), "--phase", "network"]);
    assert!(env.state_dir().join("clusters/eks-minimal/cluster.json").exists());
    let got = env.ok(&["get", "cluster", "eks-minimal", "-o", "json"]);
    let view: Value = serde_json::from_str(&got.stdout).unwrap();
    assert_eq!(view["record"]["phases"], serde_json::json!(["network"]));
    assert_eq!(
        view["record"]["spec"]["spec"]["network"]["natGateways"], "single",
        "the defaulted spec is recorded"
    );
    let listed = view["resources"].as_array().unwrap();
    assert_eq!(
        listed.len(),
        env.tagged("eks-minimal", "us-east-1").values().sum::<usize>(),
        "{view}"
    );
    assert!(
        listed
            .iter()
            .any(|r| r["kind"] == "nat-gateway" && r["resource"] == "nat/us-east-1a"),
        "{view}"
    );
    env.ok(&["delete", "cluster", "-f", s(&spec), "--yes"]);
    assert!(!env.state_dir().join("clusters/eks-minimal/cluster.json").exists());
    assert!(env.tagged("eks-minimal", "us-east-1").values().all(|n| *n == 0));
    let o = env.run(&["get", "cluster", "eks-minimal"]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stderr.contains("not found"), "{}", o.stderr);
}

#[test]
fn shrinking_the_spec_deletes_what_it_no_longer_wants() {
    let env = TestEnv::new();
    let spec = example("eks-gpu-spot.yaml");
    env.ok(&["apply", "-f", s(&spec), "--phase", "network"]);
    assert_eq!(env.tagged("ml-gpu", "us-west-2")["nat-gateway"], 3);

    let single = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("natGateways: perZone", "natGateways: single");
    let single = crate::support::write_spec(env.dir.path(), "single.yaml", &single);
    let plan = env.run(&["plan", "-f", s(&single), "--phase", "network", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{}", plan.stderr);
    for line in [
        "- nat/us-west-2b (",
        "- eip/nat-us-west-2c (",
        "~ route/private-us-west-2b",
    ] {
        assert!(plan.stdout.contains(line), "missing {line:?} in\n{}", plan.stdout);
    }
    assert!(
        plan.stdout.contains("2 to update in place, 0 to replace, 4 to delete"),
        "{}",
        plan.stdout
    );

    env.ok(&["apply", "-f", s(&single), "--phase", "network"]);
    let tagged = env.tagged("ml-gpu", "us-west-2");
    assert_eq!((tagged["nat-gateway"], tagged["elastic-ip"]), (1, 1), "{tagged:?}");
    let ec2 = env.ec2("us-west-2");
    rt().block_on(async {
        let nat = ec2
            .describe_nat_gateways()
            .filter(
                Filter::builder()
                    .name("tag:kforge.dev/resource")
                    .values("nat/us-west-2a")
                    .build(),
            )
            .filter(Filter::builder().name("state").values("available").build())
            .send()
            .await
            .unwrap();
        let nat_a = nat.nat_gateways()[0].nat_gateway_id().unwrap();
        let tables = ec2
            .describe_route_tables()
            .filters(
                Filter::builder()
                    .name("tag:kforge.dev/cluster")
                    .values("ml-gpu")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        for t in tables.route_tables() {
            for r in t.routes().iter().filter(|r| r.nat_gateway_id().is_some()) {
                assert_eq!(
                    r.nat_gateway_id(),
                    Some(nat_a),
                    "every private table routes through the single NAT"
                );
            }
        }
    });
    let plan = env.run(&["plan", "-f", s(&single), "--phase", "network", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "converged: {}", plan.stdout);
}
