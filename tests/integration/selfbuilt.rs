//! Self-built clusters against moto: provider ec2 from spec to EC2/ELBv2/Auto Scaling/IAM and back, host-key
//! discovery through the console (the proxy prints cloud-init's block), and provider hosts with no cloud call.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::Filter;

use crate::support::proxy::host_key_of;
use crate::support::{TestEnv, example, rt, s, write_spec};

const REGION: &str = "eu-west-1";
const CLUSTER: &str = "selfbuilt-ha";

/// Live instances of the cluster: (instance id, zone, tags).
fn instances(env: &TestEnv) -> Vec<(String, String, BTreeMap<String, String>)> {
    instances_of(env, CLUSTER)
}

/// The pending or running instances of `cluster`: id, zone and tags.
fn instances_of(env: &TestEnv, cluster: &str) -> Vec<(String, String, BTreeMap<String, String>)> {
    let ec2 = env.ec2(REGION);
    rt().block_on(async {
        let out = ec2
            .describe_instances()
            .filters(Filter::builder().name("tag:kforge.dev/cluster").values(cluster).build())
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap().to_string(),
                    i.placement().and_then(|p| p.availability_zone()).unwrap().to_string(),
                    i.tags()
                        .iter()
                        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
                        .collect(),
                )
            })
            .collect()
    })
}

fn with_role<'a>(
    all: &'a [(String, String, BTreeMap<String, String>)],
    role: &str,
) -> Vec<&'a (String, String, BTreeMap<String, String>)> {
    all.iter()
        .filter(|(_, _, t)| t.get("kforge.dev/role").map(String::as_str) == Some(role))
        .collect()
}

/// Everything of the cluster left in EC2, ELBv2, Auto Scaling and IAM, by kind (empty kinds left out).
fn leftovers(env: &TestEnv) -> BTreeMap<&'static str, usize> {
    let mut m = env.tagged(CLUSTER, REGION);
    m.insert("instance", instances(env).len());
    let sdk = env.sdk(REGION);
    let ec2 = env.ec2(REGION);
    rt().block_on(async {
        let f = || Filter::builder().name("tag:kforge.dev/cluster").values(CLUSTER).build();
        m.insert(
            "launch-template",
            ec2.describe_launch_templates()
                .filters(f())
                .send()
                .await
                .unwrap()
                .launch_templates()
                .len(),
        );
        m.insert(
            "key-pair",
            ec2.describe_key_pairs()
                .filters(f())
                .send()
                .await
                .unwrap()
                .key_pairs()
                .len(),
        );
        let asg = aws_sdk_autoscaling::Client::new(&sdk);
        m.insert(
            "auto-scaling-group",
            asg.describe_auto_scaling_groups()
                .send()
                .await
                .unwrap()
                .auto_scaling_groups()
                .len(),
        );
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
        m.insert(
            "load-balancer",
            elb.describe_load_balancers()
                .send()
                .await
                .unwrap()
                .load_balancers()
                .len(),
        );
        m.insert(
            "target-group",
            elb.describe_target_groups().send().await.unwrap().target_groups().len(),
        );
        let iam = aws_sdk_iam::Client::new(&sdk);
        let path = format!("/kforge/{CLUSTER}/");
        m.insert(
            "iam-role",
            iam.list_roles().path_prefix(&path).send().await.unwrap().roles().len(),
        );
        m.insert(
            "instance-profile",
            iam.list_instance_profiles()
                .path_prefix(&path)
                .send()
                .await
                .unwrap()
                .instance_profiles()
                .len(),
        );
    });
    m.retain(|_, n| *n > 0);
    m
}

/// examples/selfbuilt-ha.yaml end to end: create (stopping after the cluster phase with the hosts and their keys),
/// every resource tagged and wired, re-apply without a mutating call, scale one group in place, delete to nothing
/// without local state, and a second delete that succeeds.
#[test]
fn selfbuilt_ha_create_reapply_scale_and_delete_without_state() {
    let env = TestEnv::new();
    let spec = example("selfbuilt-ha.yaml");
    // (The bootstrap phase needs real machines: tests/integration/bootstrap.rs.)
    let o = env.ok(&[
        "create",
        "cluster",
        "-f",
        s(&spec),
        "--host-key-timeout",
        "60s",
        "--phase",
        INFRA,
    ]);

    let all = instances(&env);
    let masters = with_role(&all, "master");
    let zones: BTreeSet<&str> = masters.iter().map(|(_, z, _)| z.as_str()).collect();
    assert_eq!(masters.len(), 3);
    assert_eq!(zones.len(), 3, "one master per zone: {zones:?}");
    // moto launches a group's instances on every CreateAutoScalingGroup, even for a name it has (AWS answers
    // AlreadyExists): the calls say whether an extra worker came from a repeated create.
    let group_creates: Vec<String> = env
        .mutating()
        .into_iter()
        .filter(|a| a.contains("AutoScalingGroup"))
        .collect();
    assert_eq!(
        with_role(&all, "worker").len(),
        4,
        "2 on-demand + 2 spot workers; group calls: {group_creates:?}"
    );
    assert_eq!(with_role(&all, "bastion").len(), 1);
    for (id, _, tags) in &all {
        assert_eq!(
            tags.get("kubernetes.io/cluster/selfbuilt-ha").map(String::as_str),
            Some("owned"),
            "{id}"
        );
        if tags.get("kforge.dev/role").map(String::as_str) != Some("bastion") {
            // The hosts handed to the bootstrap carry the fingerprint each machine printed.
            let (_, fingerprint) = host_key_of(id);
            assert!(
                o.stderr.contains(&fingerprint),
                "{id}'s key {fingerprint} in:\n{}",
                o.stderr
            );
        }
    }

    let sdk = env.sdk(REGION);
    let ec2 = env.ec2(REGION);
    rt().block_on(async {
        // Launch templates: IMDSv2 only, encrypted gp3 roots, the console-keys user data, nothing secret.
        let lts = ec2
            .describe_launch_templates()
            .filters(Filter::builder().name("tag:kforge.dev/cluster").values(CLUSTER).build())
            .send()
            .await
            .unwrap();
        assert_eq!(lts.launch_templates().len(), 4, "masters, workers, spot, bastion");
        for lt in lts.launch_templates() {
            let v = ec2
                .describe_launch_template_versions()
                .launch_template_id(lt.launch_template_id().unwrap())
                .versions("$Latest")
                .send()
                .await
                .unwrap();
            let data = v.launch_template_versions()[0].launch_template_data().unwrap();
            let name = lt.launch_template_name().unwrap();
            assert_eq!(
                data.metadata_options()
                    .and_then(|m| m.http_tokens())
                    .map(|t| t.as_str()),
                Some("required"),
                "{name}"
            );
            let ebs = data.block_device_mappings()[0].ebs().unwrap();
            assert_eq!(ebs.encrypted(), Some(true), "{name}");
            use base64::Engine as _;
            let user_data = base64::engine::general_purpose::STANDARD
                .decode(data.user_data().unwrap())
                .unwrap();
            let user_data = String::from_utf8(user_data).unwrap();
            assert!(user_data.contains("emit_keys_to_console: true"), "{name}: {user_data}");
            assert!(!user_data.to_lowercase().contains("private"), "{name}: nothing secret");
        }

        // The API: an NLB whose TCP 6443 listener forwards to a target group holding the three masters.
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
        let lbs = elb.describe_load_balancers().send().await.unwrap();
        let lb = &lbs.load_balancers()[0];
        assert_eq!(lb.r#type().map(|t| t.as_str()), Some("network"));
        let listeners = elb
            .describe_listeners()
            .load_balancer_arn(lb.load_balancer_arn().unwrap())
            .send()
            .await
            .unwrap();
        let listener = &listeners.listeners()[0];
        assert_eq!(listener.port(), Some(6443));
        let tg = listener.default_actions()[0].target_group_arn().unwrap();
        let health = elb.describe_target_health().target_group_arn(tg).send().await.unwrap();
        let targets: BTreeSet<String> = health
            .target_health_descriptions()
            .iter()
            .map(|d| d.target().unwrap().id().unwrap().to_string())
            .collect();
        let master_ids: BTreeSet<String> = masters.iter().map(|(id, _, _)| id.clone()).collect();
        assert_eq!(targets, master_ids);

        // Worker groups: sizes from the spec; the spot group is a mixed-instances group with no on-demand.
        let asg = aws_sdk_autoscaling::Client::new(&sdk);
        let groups = asg.describe_auto_scaling_groups().send().await.unwrap();
        // Named `kforge-CLUSTER.GROUP`: a dot appears in neither name, so no other cluster can have it.
        let spot = groups
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some("kforge-selfbuilt-ha.spot"))
            .unwrap();
        let mixed = spot.mixed_instances_policy().unwrap();
        assert_eq!(
            mixed
                .instances_distribution()
                .unwrap()
                .on_demand_percentage_above_base_capacity(),
            Some(0)
        );
        assert_eq!(mixed.launch_template().unwrap().overrides().len(), 3);
        assert!(
            spot.tags()
                .iter()
                .any(|t| t.key() == Some("k8s.io/cluster-autoscaler/node-template/label/kforge.dev/lifecycle")),
            "labels recorded for the autoscaler and the bootstrap"
        );

        // SSH: masters and nodes only from the bastion; the bastion only from the spec's CIDR.
        let groups = ec2
            .describe_security_groups()
            .filters(Filter::builder().name("tag:kforge.dev/cluster").values(CLUSTER).build())
            .send()
            .await
            .unwrap();
        let by_name: BTreeMap<&str, &aws_sdk_ec2::types::SecurityGroup> = groups
            .security_groups()
            .iter()
            .map(|g| (g.group_name().unwrap(), g))
            .collect();
        let bastion_id = by_name["kforge-selfbuilt-ha-bastion"].group_id().unwrap();
        for name in [
            "kforge-selfbuilt-ha-masters",
            "kforge-selfbuilt-ha-nodes",
            "kforge-selfbuilt-ha-bastion",
        ] {
            for p in by_name[name]
                .ip_permissions()
                .iter()
                .filter(|p| p.from_port() == Some(22))
            {
                for r in p.ip_ranges() {
                    assert_ne!(r.cidr_ip(), Some("0.0.0.0/0"), "{name}: SSH is never open to the world");
                    assert_eq!(
                        name, "kforge-selfbuilt-ha-bastion",
                        "only the bastion takes SSH from CIDRs"
                    );
                }
                for g in p.user_id_group_pairs() {
                    assert_eq!(g.group_id(), Some(bastion_id), "{name}");
                }
            }
        }
        let etcd_from_masters = by_name["kforge-selfbuilt-ha-masters"]
            .ip_permissions()
            .iter()
            .any(|p| p.from_port() == Some(2379) && p.to_port() == Some(2380));
        assert!(etcd_from_masters);

        // Instance profiles hold their roles, which carry kforge's inline policy.
        let iam = aws_sdk_iam::Client::new(&sdk);
        let profile = iam
            .get_instance_profile()
            .instance_profile_name("kforge-selfbuilt-ha-master")
            .send()
            .await
            .unwrap();
        assert_eq!(
            profile.instance_profile().unwrap().roles()[0].role_name(),
            "kforge-selfbuilt-ha-master"
        );
        iam.get_role_policy()
            .role_name("kforge-selfbuilt-ha-master")
            .policy_name("kforge")
            .send()
            .await
            .unwrap();
    });

    // Re-apply: everything is found by tag; nothing changes.
    env.proxy.clear_calls();
    env.ok(&["apply", "-f", s(&spec), "--phase", INFRA]);
    assert_eq!(env.mutating(), Vec::<String>::new(), "a re-apply changes nothing");

    // Scale workers 2 -> 3: one in-place update of the group, nothing else.
    let text = std::fs::read_to_string(&spec).unwrap();
    let scaled = text.replacen("      desiredSize: 2\n", "      desiredSize: 3\n", 1);
    assert_ne!(scaled, text);
    let scaled = write_spec(env.dir.path(), "scaled.yaml", &scaled);
    let plan = env.ok(&["plan", "-f", s(&scaled)]);
    assert!(
        plan.stdout.contains("~ asg/workers") && plan.stdout.contains("desiredCapacity: 2 -> 3"),
        "{}",
        plan.stdout
    );
    env.proxy.clear_calls();
    env.ok(&["apply", "-f", s(&scaled), "--phase", INFRA]);
    assert_eq!(env.mutating(), ["UpdateAutoScalingGroup"]);
    assert_eq!(with_role(&instances(&env), "worker").len(), 5);

    // A new instance type is a new launch template version the group launches from; the running instances are
    // left to `rolling-update` (drained first), not replaced by an instance refresh behind the cluster's back.
    let retyped =
        std::fs::read_to_string(&scaled)
            .unwrap()
            .replacen("instanceType: m6i.xlarge", "instanceType: m7i.xlarge", 1);
    let retyped = write_spec(env.dir.path(), "retyped.yaml", &retyped);
    env.proxy.clear_calls();
    let o = env.ok(&["apply", "-f", s(&retyped), "--phase", INFRA]);
    assert_eq!(
        env.mutating(),
        [
            "CreateLaunchTemplateVersion",
            "ModifyLaunchTemplate",
            "UpdateAutoScalingGroup"
        ]
    );
    assert!(o.stderr.contains("running instances are out of date"), "{}", o.stderr);
    assert!(o.stderr.contains("kforge rolling-update cluster"), "{}", o.stderr);

    // Delete with no local state: everything is found by tag and removed; a second delete exits 0.
    std::fs::remove_dir_all(env.state_dir()).unwrap();
    env.ok(&["--region", REGION, "delete", "cluster", CLUSTER, "--yes"]);
    assert_eq!(leftovers(&env), BTreeMap::new(), "nothing of the cluster is left");
    let again = env.ok(&["--region", REGION, "delete", "cluster", CLUSTER, "--yes"]);
    assert!(again.stdout.contains("nothing to delete"), "{}", again.stdout);
}

/// The phases moto can serve: the bootstrap needs machines that answer SSH.
const INFRA: &str = "network,security,cluster";

/// A create killed right after EC2 started a machine (before kforge heard back) and run again: the machine is
/// found by its tags, not started twice (moto ignores ClientToken, so only find-by-tag can prove this).
#[test]
fn create_killed_after_run_instances_makes_no_duplicate_machine() {
    let env = TestEnv::new();
    let spec = example("selfbuilt-ha.yaml");
    let args = [
        "create",
        "cluster",
        "-f",
        s(&spec),
        "--host-key-timeout",
        "60s",
        "--phase",
        INFRA,
    ];
    let mut child = env.spawn_until_action_held("RunInstances", &args);
    child.kill().unwrap();
    child.wait().unwrap();
    // Masters and the bastion start in parallel: the held one (whichever came first) and possibly its siblings
    // exist, and kforge knows of none of them.
    let started = instances(&env);
    assert!(
        !with_role(&started, "master").is_empty() || !with_role(&started, "bastion").is_empty(),
        "the held call did start a machine"
    );
    env.proxy.reset();
    env.ok(&args);
    let all = instances(&env);
    let masters = with_role(&all, "master");
    assert_eq!(masters.len(), 3, "three masters, not four");
    let logical: BTreeSet<&str> = masters
        .iter()
        .map(|(_, _, t)| t["kforge.dev/resource"].as_str())
        .collect();
    assert_eq!(logical.len(), 3);
    assert_eq!(with_role(&all, "bastion").len(), 1);
    env.ok(&["--region", REGION, "delete", "cluster", CLUSTER, "--yes"]);
}

/// One master, public topology: the API endpoint is the master itself (no load balancer). A machine whose console
/// shows no host key is refused by name, and nothing connects to it.
#[test]
fn host_whose_key_cannot_be_established_is_refused() {
    let env = TestEnv::new();
    let spec = write_spec(
        env.dir.path(),
        "small.yaml",
        "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: small\nspec:\n  provider: ec2\n  region: eu-west-1\n  network: {topology: public, zones: [eu-west-1a, eu-west-1b]}\n  nodeGroups:\n    - {name: w, instanceType: t3.large, desiredSize: 1}\n  ssh:\n    publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me\n    allowedCidrs: [198.51.100.0/24]\n",
    );
    env.proxy.set_silent_consoles(true);
    let o = env.run(&[
        "create",
        "cluster",
        "-f",
        s(&spec),
        "--host-key-timeout",
        "1s",
        "--phase",
        INFRA,
    ]);
    assert_eq!(o.code, 4, "the wait for host keys is a deadline: {}", o.stderr);
    assert!(
        o.stderr.contains("host master-eu-west-1a (i-") && o.stderr.contains("cannot be established"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains("hint: kforge only connects to hosts whose key it knows"),
        "{}",
        o.stderr
    );

    // Once the consoles show the keys, the same hosts are listed with them; the endpoint is the master's address.
    env.proxy.set_silent_consoles(false);
    let listed = env.ok(&["get", "hosts", "-f", s(&spec), "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let hosts = list["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{list}");
    let master = hosts.iter().find(|h| h["role"] == "master").unwrap();
    assert_eq!(master["hostKey"]["kind"], "fingerprints");
    assert_eq!(master["user"], "ec2-user");
    let address = master["address"].as_str().unwrap();
    assert_eq!(list["apiEndpoint"], format!("{address}:6443"));
    let no_lb = rt().block_on(async {
        aws_sdk_elasticloadbalancingv2::Client::new(&env.sdk(REGION))
            .describe_load_balancers()
            .send()
            .await
            .unwrap()
            .load_balancers()
            .is_empty()
    });
    assert!(no_lb, "one master needs no load balancer");
    env.ok(&["--region", REGION, "delete", "cluster", "small", "--yes"]);
}

/// provider ec2's cloud integration as the bootstrap renders it for the machines moto made: every kubelet (the
/// master's too) runs with `--cloud-provider=external` and the provider ID of its own instance, the master's Node
/// registers tainted control-plane, and the addons include the AWS cloud controller manager. (moto's machines
/// answer no SSH, so the files are rendered, not installed: the node stage checks the provider ID against the
/// instance's metadata over IMDSv2 on a real machine.)
#[test]
fn ec2_kubelets_are_rendered_for_the_external_cloud_with_their_instances_provider_id() {
    let env = TestEnv::new();
    let spec = write_spec(
        env.dir.path(),
        "cloudy.yaml",
        "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: cloudy\nspec:\n  provider: ec2\n  region: eu-west-1\n  network: {topology: public, zones: [eu-west-1a, eu-west-1b]}\n  nodeGroups:\n    - {name: w, instanceType: t3.large, desiredSize: 2}\n  ssh:\n    publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me\n    allowedCidrs: [198.51.100.0/24]\n",
    );
    env.ok(&["create", "cluster", "-f", s(&spec), "--phase", INFRA]);
    let listed = env.ok(&["get", "hosts", "-f", s(&spec), "-o", "json"]);
    let list: kforge::providers::hosts::HostList = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(list.hosts.len(), 3, "{}", listed.stdout);
    // What EC2 (moto) says of each instance.
    let placed: BTreeMap<String, String> = instances_of(&env, "cloudy")
        .into_iter()
        .map(|(id, zone, _)| (id, zone))
        .collect();
    let cluster = kforge::model::load_cluster(&spec, None).unwrap();
    let pki = tempfile::tempdir().unwrap();
    let files = kforge::selfbuilt::rendered_files(&cluster, &list, pki.path()).unwrap();
    let text = |host: &str, path: &str| {
        let f = files[host]
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{host}: {path}"));
        String::from_utf8(f.bytes.clone()).unwrap()
    };
    for h in &list.hosts {
        let id = h.instance_id.as_deref().unwrap();
        let zone = &placed[id];
        let unit = text(&h.name, "/etc/systemd/system/kforge-kubelet.service");
        assert!(unit.contains("--cloud-provider=external"), "{}: {unit}", h.name);
        let config: serde_json::Value =
            serde_norway::from_str(&text(&h.name, "/etc/kforge/kubelet-config.yaml")).unwrap();
        assert_eq!(config["providerID"], format!("aws:///{zone}/{id}"), "{}", h.name);
        let tainted = config["registerWithTaints"]
            .to_string()
            .contains("node-role.kubernetes.io/control-plane");
        assert_eq!(tainted, h.role == kforge::spec::HostRole::Master, "{}", h.name);
    }
    assert_eq!(
        kforge::selfbuilt::addon_names(&cluster),
        [
            "aws-cloud-controller-manager",
            "flannel",
            "coredns",
            "aws-ebs-csi-driver"
        ]
    );
    env.ok(&["--region", REGION, "delete", "cluster", "cloudy", "--yes"]);
}

/// provider hosts: the machines are checked (identity files) and listed without a single cloud call; a key
/// others can read is refused with its field path.
#[test]
fn hosts_provider_makes_no_cloud_call() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = TestEnv::new();
    let dir = env.dir.path();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let key = dir.join("keys/id_ed25519");
    std::fs::write(
        &key,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let spec = write_spec(
        dir,
        "hosts.yaml",
        &std::fs::read_to_string(example("hosts.yaml")).unwrap(),
    );
    let o = env.ok(&["get", "hosts", "-f", s(&spec), "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(list["hosts"].as_array().unwrap().len(), 5);
    assert_eq!(list["hosts"][3]["port"], 2222);
    assert_eq!(list["hosts"][3]["hostKey"]["kind"], "publicKey");
    assert_eq!(list["hosts"][0]["hostKey"]["kind"], "knownHosts");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = env.run(&["create", "cluster", "-f", s(&spec)]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("spec.hosts[0].identityFile") && o.stderr.contains("chmod 600"),
        "{}",
        o.stderr
    );
    assert!(env.proxy.calls().is_empty(), "no cloud call: {:?}", env.proxy.calls());
}

/// Every EC2 and IAM object of `cluster` in the region, by kind, found without trusting any server-side filter
/// (listed whole, its tags or IAM path checked here).
fn census(env: &TestEnv, cluster: &str) -> BTreeMap<&'static str, BTreeSet<String>> {
    let ec2 = env.ec2(REGION);
    let iam = aws_sdk_iam::Client::new(&env.sdk(REGION));
    let mine = |tags: &[aws_sdk_ec2::types::Tag]| {
        tags.iter()
            .any(|t| t.key() == Some("kforge.dev/cluster") && t.value() == Some(cluster))
    };
    rt().block_on(async {
        let mut m: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
        let vpcs = ec2.describe_vpcs().send().await.unwrap();
        m.insert(
            "vpc",
            vpcs.vpcs()
                .iter()
                .filter(|v| mine(v.tags()))
                .filter_map(|v| v.vpc_id().map(String::from))
                .collect(),
        );
        let subnets = ec2.describe_subnets().send().await.unwrap();
        m.insert(
            "subnet",
            subnets
                .subnets()
                .iter()
                .filter(|v| mine(v.tags()))
                .filter_map(|v| v.subnet_id().map(String::from))
                .collect(),
        );
        let nats = ec2.describe_nat_gateways().send().await.unwrap();
        m.insert(
            "nat-gateway",
            nats.nat_gateways()
                .iter()
                .filter(|n| {
                    mine(n.tags())
                        && matches!(
                            n.state(),
                            Some(
                                aws_sdk_ec2::types::NatGatewayState::Available
                                    | aws_sdk_ec2::types::NatGatewayState::Pending
                            )
                        )
                })
                .filter_map(|n| n.nat_gateway_id().map(String::from))
                .collect(),
        );
        let groups = ec2.describe_security_groups().send().await.unwrap();
        m.insert(
            "security-group",
            groups
                .security_groups()
                .iter()
                .filter(|v| mine(v.tags()))
                .filter_map(|v| v.group_id().map(String::from))
                .collect(),
        );
        let lts = ec2.describe_launch_templates().send().await.unwrap();
        m.insert(
            "launch-template",
            lts.launch_templates()
                .iter()
                .filter(|v| mine(v.tags()))
                .filter_map(|v| v.launch_template_id().map(String::from))
                .collect(),
        );
        let reservations = ec2.describe_instances().send().await.unwrap();
        m.insert(
            "instance",
            reservations
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter(|i| {
                    mine(i.tags())
                        && i.state()
                            .and_then(|s| s.name())
                            .is_some_and(|s| s.as_str() != "terminated")
                })
                .filter_map(|i| i.instance_id().map(String::from))
                .collect(),
        );
        let path = format!("/kforge/{cluster}/");
        let profiles = iam.list_instance_profiles().send().await.unwrap();
        m.insert(
            "instance-profile",
            profiles
                .instance_profiles()
                .iter()
                .filter(|p| p.path() == path)
                .map(|p| p.instance_profile_name().to_string())
                .collect(),
        );
        let roles = iam.list_roles().send().await.unwrap();
        m.insert(
            "role",
            roles
                .roles()
                .iter()
                .filter(|r| r.path() == path)
                .map(|r| r.role_name().to_string())
                .collect(),
        );
        m
    })
}

/// Two self-built clusters in one region: each one's plan is empty right after both are created, and applying and
/// deleting one leaves every object of the other where it was, even where the endpoint ignores the `tag:` filter
/// of a listing or the `PathPrefix` of an IAM listing (moto does both for some calls; kforge checks what comes back).
#[test]
fn two_clusters_in_one_region_leave_each_other_alone() {
    let env = TestEnv::new();
    let base = std::fs::read_to_string(example("selfbuilt-ha.yaml")).unwrap();
    let spec = |name: &str, cidr: &str| {
        let text = base
            .replace("name: selfbuilt-ha", &format!("name: {name}"))
            .replace("172.20.0.0/16", cidr)
            .replace("count: 3", "count: 1")
            .replace("enabled: true", "enabled: false");
        write_spec(env.dir.path(), &format!("{name}.yaml"), &text)
    };
    let (alpha, beta) = (spec("alpha", "172.20.0.0/16"), spec("beta", "172.21.0.0/16"));
    let create = |f: &std::path::Path| {
        env.ok(&[
            "create",
            "cluster",
            "-f",
            s(f),
            "--host-key-timeout",
            "60s",
            "--phase",
            INFRA,
        ]);
    };
    create(&alpha);
    create(&beta);
    // Issue 18 (6), a plan not empty right after a create: with another cluster in the region, alpha's plan took
    // beta's NAT gateway for its own (moto ignores DescribeNatGateways' `tag:` filter) and would replace it, with
    // every private route re-pointed. Each cluster's plan right after the creates is empty.
    for f in [&alpha, &beta] {
        let plan = env.run(&["plan", "-f", s(f), "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    }
    let beta_before = census(&env, "beta");
    for kind in ["vpc", "nat-gateway", "instance", "instance-profile", "role"] {
        assert!(!beta_before[kind].is_empty(), "beta has its {kind}s: {beta_before:?}");
    }
    env.ok(&["apply", "-f", s(&alpha), "--phase", INFRA]);
    assert_eq!(census(&env, "beta"), beta_before, "applying alpha changed beta");
    env.ok(&["delete", "cluster", "alpha", "--yes"]);
    assert_eq!(census(&env, "beta"), beta_before, "deleting alpha touched beta");
    assert!(
        census(&env, "alpha").values().all(BTreeSet::is_empty),
        "{:?}",
        census(&env, "alpha")
    );
    env.ok(&["delete", "cluster", "beta", "--yes"]);
    assert!(
        census(&env, "beta").values().all(BTreeSet::is_empty),
        "{:?}",
        census(&env, "beta")
    );
}

/// `rolling-update --cloud-only` of a provider ec2 cluster after a launch-template change of one group: only that
/// group's workers roll, one at a time (terminated through the group, the replacement waited for until it is in
/// service and its console shows its host keys, before the next is touched); the other group is left alone, and a
/// second run finds nothing to roll.
#[test]
fn rolling_update_replaces_outdated_workers_one_at_a_time() {
    let env = TestEnv::new();
    let spec = example("selfbuilt-ha.yaml");
    env.ok(&[
        "create",
        "cluster",
        "-f",
        s(&spec),
        "--host-key-timeout",
        "60s",
        "--phase",
        INFRA,
    ]);
    let group_of = |tags: &BTreeMap<String, String>| tags.get("kforge.dev/node-group").cloned().unwrap_or_default();
    let before: BTreeMap<String, String> = with_role(&instances(&env), "worker")
        .into_iter()
        .map(|(id, _, t)| (id.clone(), group_of(t)))
        .collect();
    let old: BTreeSet<&String> = before
        .iter()
        .filter(|(_, g)| *g == "workers")
        .map(|(id, _)| id)
        .collect();
    assert_eq!((before.len(), old.len()), (4, 2), "{before:?}");

    let rolling = |extra: &[&str]| {
        let mut args = vec!["rolling-update", "cluster", CLUSTER, "--cloud-only", "-o", "json"];
        args.extend(extra);
        let o = env.ok(&args);
        let rows: Vec<(String, String)> = serde_json::from_str::<serde_json::Value>(&o.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["host"].as_str().unwrap().to_string(),
                    r["result"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (o, rows)
    };
    let (_, rows) = rolling(&["--dry-run"]);
    assert!(rows.iter().all(|(_, r)| r == "up to date"), "{rows:?}");

    // A new instance type: a new launch template version of the `workers` group only.
    let retyped =
        std::fs::read_to_string(&spec)
            .unwrap()
            .replacen("instanceType: m6i.xlarge", "instanceType: m7i.xlarge", 1);
    let retyped = write_spec(env.dir.path(), "retyped.yaml", &retyped);
    env.ok(&["apply", "-f", s(&retyped), "--phase", INFRA]);
    let (_, rows) = rolling(&["--dry-run"]);
    let would: BTreeSet<String> = rows
        .iter()
        .filter(|(_, r)| r == "would replace")
        .map(|(h, _)| h.clone())
        .collect();
    let expected: BTreeSet<String> = old.iter().map(|id| format!("workers-{id}")).collect();
    assert_eq!(would, expected, "{rows:?}");
    assert_eq!(rows.len(), 4, "{rows:?}");

    env.proxy.clear_calls();
    let (o, rows) = rolling(&["--host-key-timeout", "60s", "--replace-timeout", "2m"]);
    assert_eq!(
        env.mutating(),
        [
            "TerminateInstanceInAutoScalingGroup",
            "TerminateInstanceInAutoScalingGroup"
        ],
        "only the out-of-date workers are touched"
    );
    let replaced: Vec<&String> = rows.iter().filter(|(_, r)| r == "replaced").map(|(h, _)| h).collect();
    assert_eq!(replaced.len(), 2, "{rows:?}");
    // One at a time: the second instance is terminated only after the first one's replacement is in service and
    // showed its host keys.
    let terminated: Vec<usize> = o
        .stderr
        .match_indices(" terminated; waiting for group")
        .map(|(i, _)| i)
        .collect();
    let replacements: Vec<usize> = o
        .stderr
        .match_indices(" in service, host key read")
        .map(|(i, _)| i)
        .collect();
    assert_eq!((terminated.len(), replacements.len()), (2, 2), "{}", o.stderr);
    assert!(
        terminated[0] < replacements[0] && replacements[0] < terminated[1],
        "{}",
        o.stderr
    );

    let after: BTreeMap<String, String> = with_role(&instances(&env), "worker")
        .into_iter()
        .map(|(id, _, t)| (id.clone(), group_of(t)))
        .collect();
    assert_eq!(after.len(), 4, "the groups are back at their size: {after:?}");
    for id in &old {
        assert!(!after.contains_key(*id), "{id} was replaced");
    }
    for (id, group) in after.iter().filter(|(id, _)| !before.contains_key(*id)) {
        assert_eq!(group, "workers");
        let (_, fingerprint) = host_key_of(id);
        assert!(
            o.stderr.contains(&fingerprint),
            "{id}'s host key was read:\n{}",
            o.stderr
        );
    }
    let (_, rows) = rolling(&["--dry-run"]);
    assert!(rows.iter().all(|(_, r)| r == "up to date"), "{rows:?}");

    // Another template change, rolled with a surge of the whole group at once: the group grows first, and the old
    // instances are terminated (lowering it again) only once their replacements are in service.
    let second: BTreeSet<String> = after
        .iter()
        .filter(|(id, g)| *g == "workers" && !before.contains_key(*id))
        .map(|(id, _)| id.clone())
        .collect();
    let back =
        std::fs::read_to_string(&retyped)
            .unwrap()
            .replacen("instanceType: m7i.xlarge", "instanceType: m7i.2xlarge", 1);
    let back = write_spec(env.dir.path(), "back.yaml", &back);
    env.ok(&["apply", "-f", s(&back), "--phase", INFRA]);
    env.proxy.clear_calls();
    let (o, rows) = rolling(&[
        "--surge",
        "--max-unavailable",
        "2",
        "--host-key-timeout",
        "60s",
        "--replace-timeout",
        "2m",
    ]);
    assert_eq!(
        env.mutating(),
        [
            "SetDesiredCapacity",
            "TerminateInstanceInAutoScalingGroup",
            "TerminateInstanceInAutoScalingGroup"
        ]
    );
    assert_eq!(rows.iter().filter(|(_, r)| r == "replaced").count(), 2, "{rows:?}");
    let surged = o.stderr.find("surges by 2").expect("the surge is reported");
    let ready = o.stderr.find(" in service, host key read").unwrap();
    let first_termination = o.stderr.find(" terminated; waiting for group").unwrap();
    assert!(surged < ready && ready < first_termination, "{}", o.stderr);
    let last: BTreeMap<String, String> = with_role(&instances(&env), "worker")
        .into_iter()
        .map(|(id, _, t)| (id.clone(), group_of(t)))
        .collect();
    assert_eq!(last.len(), 4, "back at size after the surge: {last:?}");
    assert!(second.iter().all(|id| !last.contains_key(id)), "{second:?} {last:?}");
}

/// Issue 18 (6): once in three runs under load, a plan right after a selfbuilt-ha create was not empty. The cause
/// reproduced is another cluster in the same region (see `two_clusters_in_one_region_leave_each_other_alone`, which
/// runs in the normal suite); this campaign looks for any other: eight rounds of create then plan (infrastructure
/// phases, then the whole spec), each plan must say nothing to do; a plan that differs prints every attribute with
/// its old and new value, which the failure shows. Ignored (about two minutes); it passed 16 of 16 rounds with the
/// machine's two cores kept busy by 2 and 4 spinning processes.
#[test]
#[ignore]
fn plan_right_after_create_is_empty_every_time() {
    let env = TestEnv::new();
    let spec = example("selfbuilt-ha.yaml");
    for round in 0..8 {
        crate::support::moto::shared().reset();
        env.proxy.reset();
        let _ = std::fs::remove_dir_all(env.state_dir());
        env.ok(&[
            "create",
            "cluster",
            "-f",
            s(&spec),
            "--host-key-timeout",
            "60s",
            "--phase",
            INFRA,
            "-q",
        ]);
        let scoped: &[&str] = if round % 2 == 0 { &["--phase", INFRA] } else { &[] };
        let mut args = vec!["plan", "-f", s(&spec), "--detailed-exitcode"];
        args.extend_from_slice(scoped);
        let plan = env.run(&args);
        assert_eq!(plan.code, 0, "round {round}: {}\n{}", plan.stdout, plan.stderr);
    }
}

/// Kubernetes' classic load balancers (what the AWS cloud controller manager makes for a `Service` of type
/// LoadBalancer, tagged `kubernetes.io/cluster/NAME: owned`) go with the cluster, before their security group and
/// the subnets; one another cluster owns is left alone, and a second delete finds nothing.
#[test]
fn classic_load_balancers_kubernetes_made_go_with_the_cluster() {
    use aws_sdk_elasticloadbalancing::types::{Listener, Tag};
    let env = TestEnv::new();
    let text = std::fs::read_to_string(example("selfbuilt-ha.yaml"))
        .unwrap()
        .replace("count: 3", "count: 1")
        .replace("enabled: true", "enabled: false");
    let spec = write_spec(env.dir.path(), "selfbuilt-ha.yaml", &text);
    env.ok(&[
        "create",
        "cluster",
        "-f",
        s(&spec),
        "--host-key-timeout",
        "60s",
        "--phase",
        INFRA,
    ]);
    let ec2 = env.ec2(REGION);
    let elb = aws_sdk_elasticloadbalancing::Client::new(&env.sdk(REGION));
    let owned = |cluster: &str| {
        Tag::builder()
            .key(format!("kubernetes.io/cluster/{cluster}"))
            .value("owned")
            .build()
            .unwrap()
    };
    let names = rt().block_on(async {
        let subnets = ec2
            .describe_subnets()
            .filters(Filter::builder().name("tag:kforge.dev/cluster").values(CLUSTER).build())
            .send()
            .await
            .unwrap();
        let vpc = subnets.subnets()[0].vpc_id().unwrap().to_string();
        let subnet = subnets.subnets()[0].subnet_id().unwrap().to_string();
        let sg = ec2
            .create_security_group()
            .group_name("k8s-elb-a1b2c3")
            .description("Security group for Kubernetes ELB a1b2c3 (default/web)")
            .vpc_id(&vpc)
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key(format!("kubernetes.io/cluster/{CLUSTER}"))
                            .value("owned")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .group_id()
            .unwrap()
            .to_string();
        let listener = Listener::builder()
            .protocol("TCP")
            .load_balancer_port(80)
            .instance_protocol("TCP")
            .instance_port(30080)
            .build()
            .unwrap();
        for (name, cluster) in [("a1b2c3", CLUSTER), ("d4e5f6", "someone-else")] {
            elb.create_load_balancer()
                .load_balancer_name(name)
                .listeners(listener.clone())
                .subnets(&subnet)
                .security_groups(&sg)
                .tags(owned(cluster))
                .tags(
                    Tag::builder()
                        .key("kubernetes.io/service-name")
                        .value("default/web")
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
        }
        let listed = elb.describe_load_balancers().send().await.unwrap();
        listed
            .load_balancer_descriptions()
            .iter()
            .filter_map(|d| d.load_balancer_name().map(str::to_string))
            .collect::<BTreeSet<String>>()
    });
    assert_eq!(names, BTreeSet::from(["a1b2c3".to_string(), "d4e5f6".to_string()]));
    let o = env.ok(&["delete", "cluster", CLUSTER, "--yes", "-o", "json"]);
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let deleted: Vec<&serde_json::Value> = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "classic-load-balancer")
        .collect();
    assert_eq!(deleted.len(), 1, "{}", o.stdout);
    assert_eq!(deleted[0]["id"], "a1b2c3");
    assert_eq!(deleted[0]["result"], "deleted");
    let left = rt().block_on(elb.describe_load_balancers().send()).unwrap();
    let left: Vec<&str> = left
        .load_balancer_descriptions()
        .iter()
        .filter_map(|d| d.load_balancer_name())
        .collect();
    assert_eq!(left, ["d4e5f6"], "only the other cluster's is left");
    assert!(
        census(&env, CLUSTER).values().all(BTreeSet::is_empty),
        "{:?}",
        census(&env, CLUSTER)
    );
    let again = env.ok(&["delete", "cluster", CLUSTER, "--yes"]);
    assert!(again.stderr.contains("nothing to delete"), "{}", again.stderr);
}
