//! A create killed with SIGKILL right after AWS acted on a call (the client never learned the new id), then run
//! again: exactly one of everything, nothing orphaned. moto ignores ClientToken, so only find-by-tag saves us.

use crate::support::{TestEnv, example, s};

fn kill_at(env: &TestEnv, spec: &str, nth_mutating_call: usize) {
    env.proxy.reset();
    let mut child = env.spawn_until_held(
        nth_mutating_call,
        &["create", "cluster", "-f", spec, "--phase", "network", "-q"],
    );
    child.kill().unwrap(); // SIGKILL: no cleanup, the lock file stays behind
    child.wait().unwrap();
    // What the killed run had sent reaches AWS before the re-run looks (a create still in flight when the re-run
    // lists is the separate race of issue 18).
    env.proxy.wait_forwarded();
    env.proxy.reset();
}

#[test]
fn create_killed_at_several_points_converges_on_rerun() {
    let env = TestEnv::new();
    let spec = example("eks-gpu-spot.yaml");
    let spec = s(&spec);
    let mut expected = None;
    // Points across the run: the VPC, early subnets and EIPs, NAT gateways, the last routes. The network phase
    // of this example makes 34 mutating calls.
    for point in [1, 6, 15, 24, 30, 34] {
        crate::support::moto::shared().reset();
        kill_at(&env, spec, point);
        let rerun = env.ok(&["create", "cluster", "-f", spec, "--phase", "network", "-q"]);
        assert!(rerun.stdout.contains("nat/us-west-2c"), "{}", rerun.stdout);
        let tagged = env.tagged("ml-gpu", "us-west-2");
        let all = env.all_non_default("us-west-2");
        assert_eq!(tagged["vpc"], 1, "kill at {point}: {tagged:?}");
        assert_eq!(tagged["subnet"], 6, "kill at {point}: {tagged:?}");
        assert_eq!(tagged["nat-gateway"], 3, "kill at {point}: {tagged:?}");
        assert_eq!(tagged["elastic-ip"], 3, "kill at {point}: {tagged:?}");
        assert_eq!(tagged["internet-gateway"], 1, "kill at {point}: {tagged:?}");
        assert_eq!(tagged["route-table"], 4, "kill at {point}: {tagged:?}");
        // Untagged leftovers would show up as a difference between all and tagged.
        for kind in [
            "vpc",
            "subnet",
            "nat-gateway",
            "elastic-ip",
            "internet-gateway",
            "route-table",
        ] {
            assert_eq!(
                all[kind], tagged[kind],
                "kill at {point}: orphaned {kind}: all {all:?} tagged {tagged:?}"
            );
        }
        let plan = env.run(&["plan", "-f", spec, "--phase", "network", "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "kill at {point}: converged: {}", plan.stdout);
        match &expected {
            None => expected = Some(tagged),
            Some(e) => assert_eq!(e, &tagged),
        }
    }
}

#[test]
fn number_of_mutating_calls_matches_the_kill_points() {
    // Guards the kill points above: if the network phase grows or shrinks, the points must move with it.
    let env = TestEnv::new();
    env.ok(&[
        "create",
        "cluster",
        "-f",
        s(&example("eks-gpu-spot.yaml")),
        "--phase",
        "network",
        "-q",
    ]);
    let n = env.proxy.calls().iter().filter(|c| c.is_mutating()).count();
    assert_eq!(n, 34, "mutating calls of the network phase");
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "waited too long for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Issue 18 (1), the race behind a duplicate seen once in 20 killed EKS creates: the killed run's CreateRouteTable
/// calls were accepted but not yet visible when the re-run listed. The proxy's gate holds every CreateRouteTable
/// before it reaches moto; the first run is killed with its calls held, the re-run lists the route tables (none),
/// then the killed run's creates land, then the re-run's own. The re-run's second look after each create finds the
/// twin and keeps one, saying so; a plan afterwards is empty. On AWS the ClientToken does it first (a repeat is
/// answered with the first table), which moto does not implement: the test checks both runs sent the same token
/// for each table, the part AWS needs from kforge.
#[test]
fn a_create_landing_after_the_rerun_listed_leaves_no_twin() {
    let env = TestEnv::new();
    let spec = example("eks-minimal.yaml");
    let spec = s(&spec);
    let args = ["create", "cluster", "-f", spec, "--phase", "network"];
    env.proxy.gate_action("CreateRouteTable");
    let mut killed = env.spawn_quiet(&args);
    // eks-minimal has three route tables (public, one private per zone), created at once.
    wait_until("the first run's route table creates", || env.proxy.gated() == 3);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let killed_tokens = env.proxy.client_tokens("CreateRouteTable");
    let listed = || {
        env.proxy
            .calls()
            .iter()
            .filter(|c| c.action == "DescribeRouteTables")
            .count()
    };
    let listed_before = listed();
    let rerun = env
        .kforge()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the re-run's listing of route tables", || listed() > listed_before);
    // The killed run's three creates land now, after the re-run looked; the re-run's go after them.
    env.proxy.open_gate(3);
    env.proxy.remove_gate();
    let out = rerun.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "re-run: {stderr}");
    assert_eq!(
        stderr.matches("(a create interrupted and repeated)").count(),
        3,
        "each twin named: {stderr}"
    );
    let tagged = env.tagged("eks-minimal", "us-east-1");
    let all = env.all_non_default("us-east-1");
    assert_eq!(tagged["route-table"], 3, "{tagged:?}");
    assert_eq!(all["route-table"], 3, "{all:?}");
    let plan = env.run(&["plan", "-f", spec, "--phase", "network", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "converged: {}{}", plan.stdout, plan.stderr);
    // The re-run took over the dead run's lock and with it its generation: the same token per table.
    let rerun_tokens = env.proxy.client_tokens("CreateRouteTable");
    assert_eq!(rerun_tokens.len(), 6, "{rerun_tokens:?}");
    let mut first: Vec<&String> = killed_tokens.iter().collect();
    let mut second: Vec<&String> = rerun_tokens[3..].iter().collect();
    first.sort();
    second.sort();
    assert_eq!(first, second, "tokens of the killed run and of the re-run");
    assert_eq!(first.iter().collect::<std::collections::BTreeSet<_>>().len(), 3);

    // Twins that land after the run's second look (here: made by hand with the same tags: a route table, an
    // internet gateway, an elastic IP, a NAT gateway and a VPC, each holding nothing; AWS refuses a subnet twin, its
    // CIDR overlaps) are found by the next plan, which keeps
    // the resource in use and lists each empty twin for deletion; apply deletes them.
    let ec2 = env.ec2("us-east-1");
    let twins: Vec<String> = crate::support::rt().block_on(async {
        use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
        let cluster_tag = || {
            Filter::builder()
                .name("tag:kforge.dev/cluster")
                .values("eks-minimal")
                .build()
        };
        let logical = |id: &str| Filter::builder().name("tag:kforge.dev/resource").values(id).build();
        let spec_of = |kind: ResourceType, tags: &[Tag]| {
            TagSpecification::builder()
                .resource_type(kind)
                .set_tags(Some(tags.to_vec()))
                .build()
        };
        let tables = ec2
            .describe_route_tables()
            .filters(cluster_tag())
            .filters(logical("rtb/public"))
            .send()
            .await
            .unwrap();
        let table = &tables.route_tables()[0];
        let vpc = table.vpc_id().unwrap();
        let rtb = ec2
            .create_route_table()
            .vpc_id(vpc)
            .tag_specifications(spec_of(ResourceType::RouteTable, table.tags()))
            .send()
            .await
            .unwrap();
        let igws = ec2
            .describe_internet_gateways()
            .filters(cluster_tag())
            .filters(logical("igw"))
            .send()
            .await
            .unwrap();
        let igw = ec2
            .create_internet_gateway()
            .tag_specifications(spec_of(
                ResourceType::InternetGateway,
                igws.internet_gateways()[0].tags(),
            ))
            .send()
            .await
            .unwrap();
        let eips = ec2
            .describe_addresses()
            .filters(cluster_tag())
            .filters(logical("eip/nat-us-east-1a"))
            .send()
            .await
            .unwrap();
        let eip = ec2
            .allocate_address()
            .domain(aws_sdk_ec2::types::DomainType::Vpc)
            .tag_specifications(spec_of(ResourceType::ElasticIp, eips.addresses()[0].tags()))
            .send()
            .await
            .unwrap();
        let nats = ec2
            .describe_nat_gateways()
            .filter(cluster_tag())
            .filter(logical("nat/us-east-1a"))
            .send()
            .await
            .unwrap();
        let nat = &nats.nat_gateways()[0];
        let spare_ip = ec2
            .allocate_address()
            .domain(aws_sdk_ec2::types::DomainType::Vpc)
            .send()
            .await
            .unwrap();
        let nat_twin = ec2
            .create_nat_gateway()
            .subnet_id(nat.subnet_id().unwrap())
            .allocation_id(spare_ip.allocation_id().unwrap())
            .tag_specifications(spec_of(ResourceType::Natgateway, nat.tags()))
            .send()
            .await
            .unwrap();
        let vpcs = ec2
            .describe_vpcs()
            .filters(cluster_tag())
            .filters(logical("vpc"))
            .send()
            .await
            .unwrap();
        let twin_vpc = ec2
            .create_vpc()
            .cidr_block("10.99.0.0/16")
            .tag_specifications(spec_of(ResourceType::Vpc, vpcs.vpcs()[0].tags()))
            .send()
            .await
            .unwrap();
        vec![
            rtb.route_table().unwrap().route_table_id().unwrap().to_string(),
            igw.internet_gateway()
                .unwrap()
                .internet_gateway_id()
                .unwrap()
                .to_string(),
            eip.allocation_id().unwrap().to_string(),
            nat_twin.nat_gateway().unwrap().nat_gateway_id().unwrap().to_string(),
            twin_vpc.vpc().unwrap().vpc_id().unwrap().to_string(),
        ]
    });
    let plan = env.run(&["plan", "-f", spec, "--phase", "network", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{}{}", plan.stdout, plan.stderr);
    for twin in &twins {
        assert!(
            plan.stdout.contains(twin.as_str()),
            "the empty twin {twin} listed for deletion: {}",
            plan.stdout
        );
    }
    assert_eq!(plan.stderr.matches("holds nothing").count(), 5, "{}", plan.stderr);
    env.ok(&args);
    let tagged = env.tagged("eks-minimal", "us-east-1");
    assert_eq!(
        (
            tagged["route-table"],
            tagged["subnet"],
            tagged["internet-gateway"],
            tagged["elastic-ip"],
            tagged["nat-gateway"],
            tagged["vpc"]
        ),
        (3, 4, 1, 1, 1, 1),
        "{tagged:?}"
    );
    let plan = env.run(&["plan", "-f", spec, "--phase", "network", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
}

/// Issue 18 (1): 20 creates of eks-minimal (every phase, its EKS addons off: moto has no addon API), each
/// SIGKILLed at a different moment in its first seconds with 40 ms of latency on every call (so creates are in
/// flight when it dies), re-run at once: every trial converges (re-run exits 0, no untagged leftovers, a plan is
/// empty). Ignored: a campaign of a few minutes, run for the closing note with
/// `cargo test --test integration -- --ignored kill_campaign`.
#[test]
#[ignore]
fn kill_campaign_over_eks_minimal_converges_20_of_20() {
    let env = TestEnv::new();
    // moto has no EKS addon API: the example with its addons off, as the campaign ran it.
    let text = std::fs::read_to_string(example("eks-minimal.yaml")).unwrap() + "  addons: []\n";
    let spec = crate::support::write_spec(env.dir.path(), "eks-minimal.yaml", &text);
    let spec = s(&spec);
    let mut failures = Vec::new();
    for trial in 0..20u64 {
        crate::support::moto::shared().reset();
        env.proxy.reset();
        let _ = std::fs::remove_dir_all(env.state_dir());
        env.proxy.set_latency(std::time::Duration::from_millis(40));
        let mut child = env.spawn_quiet(&["create", "cluster", "-f", spec, "-q"]);
        std::thread::sleep(std::time::Duration::from_millis(400 + 90 * trial));
        child.kill().unwrap();
        child.wait().unwrap();
        let rerun = env.run(&["create", "cluster", "-f", spec, "-q"]);
        env.proxy.set_latency(std::time::Duration::ZERO);
        let tagged = env.tagged("eks-minimal", "us-east-1");
        let all = env.all_non_default("us-east-1");
        let plan = env.run(&["plan", "-f", spec, "--detailed-exitcode"]);
        let kinds = [
            "vpc",
            "subnet",
            "nat-gateway",
            "elastic-ip",
            "internet-gateway",
            "route-table",
        ];
        let ok = rerun.code == 0
            && plan.code == 0
            && kinds.iter().all(|k| tagged[k] == all[k])
            && tagged["route-table"] == 3
            && tagged["subnet"] == 4;
        eprintln!(
            "trial {trial:2}: killed after {} ms: re-run {}, plan {}, {}",
            400 + 90 * trial,
            rerun.code,
            plan.code,
            if ok { "converged" } else { "NOT converged" }
        );
        if !ok {
            failures.push(format!(
                "trial {trial}: re-run {} {}\nplan {} {}\ntagged {tagged:?}\nall {all:?}",
                rerun.code, rerun.stderr, plan.code, plan.stdout
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 20 did not converge:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
