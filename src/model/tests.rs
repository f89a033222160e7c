//! The model's validation and round-trip tests: every rule with its field path and hint, `to_spec` a fixed point.

use super::*;

fn ctx() -> Context {
    Context {
        fallback_region: None,
        base_dir: PathBuf::from("."),
        origin: "t.yaml".into(),
    }
}

fn check(yaml_spec_body: &str) -> Result<Cluster, ValidationError> {
    let text =
        format!("apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: demo\nspec:\n{yaml_spec_body}");
    let spec = spec::parse(&text, "t.yaml").unwrap();
    Cluster::from_spec(&spec, &ctx())
}

fn paths(e: &ValidationError) -> Vec<&str> {
    e.errors.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn defaults_for_eks() {
    let c = check("  provider: eks\n  region: us-east-1\n").unwrap();
    let net = c.network.as_ref().unwrap();
    assert_eq!(net.zones, ["us-east-1a", "us-east-1b", "us-east-1c"]);
    assert_eq!(net.nat_gateways, NatGateways::Single);
    assert_eq!(net.subnets.len(), 6);
    assert_eq!(
        net.subnets[0].source,
        SubnetSource::Create {
            cidr: "10.0.0.0/19".parse().unwrap()
        }
    );
    assert_eq!(net.subnets[3].kind, SubnetType::Public);
    assert_eq!(
        net.subnets[3].source,
        SubnetSource::Create {
            cidr: "10.0.96.0/19".parse().unwrap()
        }
    );
    assert_eq!(c.node_groups[0].desired_size, 2);
    assert_eq!(c.kubernetes_version, *SUPPORTED_VERSIONS.last().unwrap());
    assert_eq!(c.addons.len(), 3);
}

#[test]
fn defaulted_spec_round_trips() {
    let c = check("  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: eu-west-1\n  controlPlane: {count: 3}\n  nodeGroups:\n  - name: a\n    desiredSize: 3\n").unwrap();
    let text = serde_norway::to_string(&c.to_spec()).unwrap();
    let again = Cluster::from_spec(&spec::parse(&text, "x").unwrap(), &ctx()).unwrap();
    assert_eq!(c, again);
}

#[test]
fn region_falls_back_to_context_and_is_required() {
    let e = check("  provider: eks\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.region"]);
    let spec = spec::parse(
        "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\nspec: {provider: eks}\n",
        "t",
    )
    .unwrap();
    let c = Cluster::from_spec(
        &spec,
        &Context {
            fallback_region: Some("us-west-2".into()),
            ..ctx()
        },
    )
    .unwrap();
    assert_eq!(c.region(), Some("us-west-2"));
}

#[test]
fn subnet_outside_vpc_and_overlap() {
    let e = check(
        "  provider: eks\n  region: us-east-1\n  network:\n    vpcCidr: 10.0.0.0/16\n    zones: [us-east-1a, us-east-1b]\n    topology: public\n    subnets:\n    - {zone: us-east-1a, type: public, cidr: 10.1.0.0/24}\n    - {zone: us-east-1b, type: public, cidr: 10.0.0.0/20}\n    - {zone: us-east-1b, type: public, cidr: 10.0.1.0/24}\n",
    )
    .unwrap_err();
    let p = paths(&e);
    assert!(p.contains(&"spec.network.subnets[0].cidr"), "{e}");
    assert!(p.contains(&"spec.network.subnets[2].cidr"), "{e}");
    assert!(e.to_string().contains("outside the VPC 10.0.0.0/16"), "{e}");
    assert!(e.to_string().contains("overlaps"), "{e}");
}

#[test]
fn bad_cidr_and_host_bits() {
    let e = check("  provider: eks\n  region: us-east-1\n  network: {vpcCidr: 10.0.0.0/33}\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.network.vpcCidr"]);
    let e = check("  provider: eks\n  region: us-east-1\n  network: {vpcCidr: 10.0.0.1/16}\n").unwrap_err();
    assert!(e.to_string().contains("use the network address `10.0.0.0/16`"), "{e}");
}

#[test]
fn ec2_needs_a_key_and_a_known_image() {
    let e = check("  provider: ec2\n  region: us-east-1\n  image: debian\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.image", "spec.ssh.publicKey"]);
    assert!(e.to_string().contains("ssh-keygen -t ed25519"), "{e}");
    let c = check(&format!(
        "  provider: ec2\n{}  region: us-east-1\n  image: ubuntu\n",
        "  ssh: {publicKeyFile: id.pub, publicKey: x}\n"
    ))
    .unwrap_err();
    assert_eq!(paths(&c), ["spec.ssh.publicKeyFile"]);
    let c = check("  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: us-east-1\n  image: ubuntu\n  controlPlane: {apiAllowedCidrs: [10.0.0.0/8]}\n").unwrap();
    assert_eq!(c.ssh_user(), "ubuntu");
    assert_eq!(c.image, Some(MachineImage::Ubuntu));
    assert_eq!(
        c.control_plane.unwrap().api_allowed_cidrs,
        ["10.0.0.0/8".parse::<Ipv4Net>().unwrap()]
    );
    let e = check("  provider: eks\n  region: us-east-1\n  image: al2023\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.image"]);
}

#[test]
fn ha_needs_zones_and_odd_masters() {
    let e = check("  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: us-east-1\n  network: {zones: [us-east-1a, us-east-1b]}\n  controlPlane: {count: 3}\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.network.zones"]);
    let e = check("  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: us-east-1\n  controlPlane: {count: 2}\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.controlPlane.count"]);
}

#[test]
fn zones_outside_region() {
    let e = check("  provider: eks\n  region: us-east-1\n  network: {zones: [us-east-1a, eu-west-1b]}\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.network.zones[1]"]);
    assert!(zone_in_region("us-east-1-bos-1a", "us-east-1"));
    assert!(!zone_in_region("us-east-12a", "us-east-1"));
}

#[test]
fn node_group_rules() {
    let e = check(
        "  provider: eks\n  region: us-east-1\n  nodeGroups:\n  - {name: a, minSize: 3, maxSize: 1}\n  - {name: b, spot: true}\n  - {name: B}\n  - {name: g, gpu: true, instanceType: m5.large}\n",
    )
    .unwrap_err();
    assert_eq!(
        paths(&e),
        [
            "spec.nodeGroups[0].minSize",
            "spec.nodeGroups[1].instanceTypes",
            "spec.nodeGroups[2].name",
            "spec.nodeGroups[3].instanceType"
        ]
    );
    let e = check("  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: us-east-1\n  nodeGroups:\n  - {name: a}\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.nodeGroups[0]"]);
}

#[test]
fn group_names_never_collide() {
    // With a dash between them, cluster `aa` + group `bb-cc` and cluster `aa-bb` + group `cc` were one name.
    assert_ne!(group_resource_name("aa", "bb-cc"), group_resource_name("aa-bb", "cc"));
    assert_eq!(group_resource_name("aa", "bb-cc"), "kforge-aa.bb-cc");
    // An ec2 group may not take the name of the masters' or the bastion's launch template.
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me";
    for reserved in ["masters", "bastion"] {
        let e = check(&format!(
            "  provider: ec2\n  ssh: {{publicKey: {key}}}\n  region: us-east-1\n  nodeGroups:\n  - {{name: {reserved}, instanceType: m5.large, desiredSize: 1}}\n"
        ))
        .unwrap_err();
        assert_eq!(paths(&e), ["spec.nodeGroups[0].name"], "{reserved}: {e}");
    }
    // An EKS cluster has neither, so the names are free there.
    assert!(check("  provider: eks\n  region: us-east-1\n  nodeGroups:\n  - {name: masters}\n").is_ok());
}

#[test]
fn provider_specific_sections() {
    let e = check("  provider: eks\n  region: us-east-1\n  controlPlane: {count: 1}\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.controlPlane"]);
    let e = check("  provider: hosts\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.hosts"]);
}

#[test]
fn unsupported_version_and_bad_name() {
    let text = "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata: {name: Bad_Name}\nspec: {provider: eks, region: us-east-1, kubernetesVersion: '1.12'}\n";
    let e = Cluster::from_spec(&spec::parse(text, "t").unwrap(), &ctx()).unwrap_err();
    assert_eq!(paths(&e), ["metadata.name", "spec.kubernetesVersion"]);
    assert!(e.to_string().contains("hint: use one of 1.30"), "{e}");
    assert!(e.to_string().contains("not supported with provider eks"), "{e}");
}

#[test]
fn role_arns_are_checked() {
    let c = check(
        "  provider: eks\n  region: us-east-1\n  iam: {clusterRoleArn: 'arn:aws:iam::123456789012:role/eks/cluster'}\n",
    )
    .unwrap();
    assert_eq!(
        c.iam.cluster_role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/eks/cluster")
    );
    let e =
        check("  provider: eks\n  region: us-east-1\n  iam: {nodeRoleArn: 'arn:aws:iam::1234:role/x'}\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.iam.nodeRoleArn"]);
}

#[test]
fn reserved_tags_refused() {
    let e = check("  provider: eks\n  region: us-east-1\n  tags: {kforge.dev/cluster: x}\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.tags.kforge.dev/cluster"]);
}

#[test]
fn public_topology_has_no_nat() {
    let c = check("  provider: eks\n  region: us-east-1\n  network: {topology: public}\n").unwrap();
    let net = c.network.unwrap();
    assert_eq!(net.nat_gateways, NatGateways::None);
    assert!(net.subnets.iter().all(|s| s.kind == SubnetType::Public));
    let e = check("  provider: eks\n  region: us-east-1\n  network: {topology: public, natGateways: single}\n")
        .unwrap_err();
    assert_eq!(paths(&e), ["spec.network.natGateways"]);
}

#[test]
fn self_built_addons_are_the_ones_the_bootstrap_applies() {
    let ec2 = "  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: us-east-1\n";
    let c = check(ec2).unwrap();
    let names: Vec<&str> = c.addons.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["flannel", "coredns", "aws-ebs-csi-driver"]);
    let none = check(&format!("{ec2}  addons: []\n")).unwrap();
    assert!(none.addons.is_empty());
    let ok = check(&format!(
        "{ec2}  addons: [{{name: coredns}}, {{name: metrics-server}}]\n"
    ))
    .unwrap();
    assert_eq!(ok.addons.len(), 2);
    let e = check(&format!(
        "{ec2}  addons: [{{name: coredns}}, {{name: calico}}, {{name: aws-cloud-controller-manager}}, {{name: flannel, version: v1}}, {{name: weave}}]\n"
    ))
    .unwrap_err();
    assert_eq!(
        paths(&e),
        [
            "spec.addons[1].name",
            "spec.addons[2].name",
            "spec.addons[3].version",
            "spec.addons[4].name"
        ]
    );
    let text = e.to_string();
    assert!(
        text.contains("`calico` is not an addon kforge installs: the bootstrap's pod network is flannel"),
        "{text}"
    );
    assert!(text.contains("comes with every provider ec2 cluster"), "{text}");
    // Provider hosts has no cloud: the EBS CSI driver cannot work there.
    let hosts = "  provider: hosts\n  hosts: [{name: m1, address: 10.0.0.1, role: master, identityFile: id}]\n";
    let c = check(hosts).unwrap();
    let names: Vec<&str> = c.addons.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["flannel", "coredns"]);
    let e = check(&format!(
        "{hosts}  addons: [{{name: metrics-server}}, {{name: aws-ebs-csi-driver}}]\n"
    ))
    .unwrap_err();
    assert_eq!(paths(&e), ["spec.addons[1].name"]);
    assert!(
        e.to_string().contains("needs AWS, and provider hosts has no cloud"),
        "{e}"
    );
}

#[test]
fn self_built_versions_are_those_with_a_manifest() {
    let hosts = "  provider: hosts\n  hosts: [{name: m1, address: 10.0.0.1, role: master, identityFile: id}]\n";
    for v in ["1.33", "1.34", "1.35"] {
        let c = check(&format!("{hosts}  kubernetesVersion: '{v}'\n")).unwrap();
        assert_eq!(c.kubernetes_version, v);
    }
    assert_eq!(check(hosts).unwrap().kubernetes_version, DEFAULT_VERSION);
    for v in ["1.32", "1.36"] {
        let e = check(&format!("{hosts}  kubernetesVersion: '{v}'\n")).unwrap_err();
        assert_eq!(paths(&e), ["spec.kubernetesVersion"]);
        assert!(e.to_string().contains("use one of 1.33, 1.34, 1.35"), "{e}");
    }
}

#[test]
fn cgroup_v1_cannot_be_allowed_where_kubernetes_requires_v2() {
    let hosts = "  provider: hosts\n  hosts: [{name: m1, address: 10.0.0.1, role: master, identityFile: id}]\n";
    assert!(!check(hosts).unwrap().kubelet.fail_cgroup_v1);
    assert!(
        check(&format!("{hosts}  kubernetesVersion: '1.35'\n"))
            .unwrap()
            .kubelet
            .fail_cgroup_v1
    );
    let strict = check(&format!("{hosts}  kubelet: {{failCgroupV1: true}}\n")).unwrap();
    assert!(strict.kubelet.fail_cgroup_v1);
    let e = check(&format!(
        "{hosts}  kubernetesVersion: '1.35'\n  kubelet: {{failCgroupV1: false}}\n"
    ))
    .unwrap_err();
    assert_eq!(paths(&e), ["spec.kubelet.failCgroupV1"]);
    assert!(e.to_string().contains("requires cgroup v2"), "{e}");
    let e = check("  provider: eks\n  region: us-east-1\n  kubelet: {failCgroupV1: true}\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.kubelet"]);
}

#[test]
fn kubelet_thresholds_are_validated_and_unlisted_eviction_signals_keep_their_defaults() {
    let hosts = "  provider: hosts\n  hosts: [{name: m1, address: 10.0.0.1, role: master, identityFile: id}]\n";
    let untuned = check(hosts).unwrap().kubelet;
    assert!(untuned.eviction_hard_rendered().is_empty() && untuned.image_gc_rendered().is_none());
    let tuned = check(&format!(
        "{hosts}  kubelet:\n    evictionHard: {{nodefs.available: '1%', memory.available: 1.5Gi}}\n    \
         imageGCHighThresholdPercent: 100\n"
    ))
    .unwrap()
    .kubelet;
    let rendered = tuned.eviction_hard_rendered();
    assert_eq!(rendered["nodefs.available"], "1%");
    assert_eq!(rendered["memory.available"], "1.5Gi");
    assert_eq!(
        rendered["imagefs.available"], "15%",
        "a default the spec did not replace"
    );
    assert_eq!(rendered.len(), 5);
    assert_eq!(tuned.image_gc_rendered(), Some((100, 80)));
    // The round trip writes back what the spec set, not the defaults.
    let back = check(&format!(
        "{hosts}  kubelet:\n    evictionHard: {{nodefs.available: '1%'}}\n    imageGCLowThresholdPercent: 70\n"
    ))
    .unwrap()
    .to_spec();
    let kubelet = back.spec.kubelet.unwrap();
    assert_eq!(kubelet.eviction_hard.unwrap().len(), 1);
    assert_eq!(
        (
            kubelet.image_gc_high_threshold_percent,
            kubelet.image_gc_low_threshold_percent
        ),
        (None, Some(70))
    );

    for (bad, path, says) in [
        (
            "evictionHard: {disk.available: '10%'}",
            "spec.kubelet.evictionHard.disk.available",
            "not an eviction signal",
        ),
        (
            "evictionHard: {nodefs.available: '120%'}",
            "spec.kubelet.evictionHard.nodefs.available",
            "neither a percentage",
        ),
        (
            "evictionHard: {nodefs.available: '100%'}",
            "spec.kubelet.evictionHard.nodefs.available",
            "below 100%",
        ),
        (
            "evictionHard: {memory.available: 'lots'}",
            "spec.kubelet.evictionHard.memory.available",
            "neither a percentage",
        ),
        (
            "evictionHard: {memory.available: '-1Gi'}",
            "spec.kubelet.evictionHard.memory.available",
            "neither a percentage",
        ),
        (
            "imageGCHighThresholdPercent: 101",
            "spec.kubelet.imageGCHighThresholdPercent",
            "not a percentage",
        ),
        (
            "imageGCHighThresholdPercent: 70",
            "spec.kubelet.imageGCHighThresholdPercent",
            "must be below",
        ),
        (
            "{imageGCHighThresholdPercent: 90, imageGCLowThresholdPercent: 90}",
            "spec.kubelet.imageGCLowThresholdPercent",
            "must be below",
        ),
    ] {
        let body = if bad.starts_with('{') {
            bad.to_string()
        } else {
            format!("{{{bad}}}")
        };
        let e = check(&format!("{hosts}  kubelet: {body}\n")).unwrap_err();
        assert_eq!(paths(&e), [path], "{bad}: {e}");
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
}

#[test]
fn asset_versions_need_a_digest_and_the_image_registry_a_registry() {
    let hosts = "  provider: hosts\n  hosts: [{name: m1, address: 10.0.0.1, role: master, identityFile: id}]\n";
    let sha = "a".repeat(64);
    let c = check(&format!(
        "{hosts}  assets:\n    imageRegistry: mirror.internal:5000/k8s\n    files:\n      containerd: {{version: v1.7.28, sha256: {sha}}}\n"
    ))
    .unwrap();
    assert_eq!(c.assets.image_registry.as_deref(), Some("mirror.internal:5000/k8s"));
    assert_eq!(c.assets.files["containerd"].version.as_deref(), Some("v1.7.28"));
    assert_eq!(Cluster::from_spec(&c.to_spec(), &ctx()).unwrap(), c, "round trip");
    let e = check(&format!(
        "{hosts}  assets:\n    imageRegistry: https://mirror/\n    files:\n      containerd: {{version: v1.7.28}}\n      etcd: {{version: 'v3 6', sha256: {sha}}}\n"
    ))
    .unwrap_err();
    assert_eq!(
        paths(&e),
        [
            "spec.assets.files.containerd",
            "spec.assets.files.etcd.version",
            "spec.assets.imageRegistry"
        ]
    );
}

#[test]
fn a_public_key_file_that_is_no_key_is_refused_after_reading_a_little() {
    let e = check("  provider: ec2\n  region: us-east-1\n  ssh: {publicKeyFile: /dev/zero}\n").unwrap_err();
    assert_eq!(paths(&e), ["spec.ssh.publicKeyFile"]);
    assert!(e.to_string().contains("larger than 65536 bytes"), "{e}");
}

#[test]
fn numbers_are_held_to_what_aws_takes() {
    let ec2 = "  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: us-east-1\n";
    let group = |fields: &str| {
        check(&format!(
            "{ec2}  nodeGroups:\n  - {{name: a, desiredSize: 1, {fields}}}\n"
        ))
    };
    let e = group("maxSize: 4294967295").unwrap_err();
    assert_eq!(paths(&e), ["spec.nodeGroups[0].maxSize"]);
    let e = group("volume: {type: gp3, iops: 4294967295, throughput: 2000}").unwrap_err();
    assert_eq!(
        paths(&e),
        ["spec.nodeGroups[0].volume.iops", "spec.nodeGroups[0].volume.throughput"]
    );
    let e = group("volume: {type: io2}").unwrap_err();
    assert_eq!(paths(&e), ["spec.nodeGroups[0].volume.iops"]);
    assert!(group("volume: {type: io1, iops: 5000}").is_ok());
    assert!(group("maxSize: 1000, volume: {type: gp3, iops: 16000, throughput: 1000}").is_ok());
    let tags: String = (0..45).map(|i| format!("t{i}: v, ")).collect();
    let e = check(&format!("{ec2}  tags: {{{tags}}}\n")).unwrap_err();
    assert_eq!(paths(&e), ["spec.tags"]);
    assert_eq!(aws_i32(MAX_GROUP_SIZE), 1000);
}
