//! kforge's tagging convention: every resource it creates carries the cluster, its logical id and the manager, so
//! it can be found again (re-runs converge, delete works without local state) and never confused with foreign ones.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

pub const CLUSTER: &str = "kforge.dev/cluster";
pub const RESOURCE: &str = "kforge.dev/resource";
pub const MANAGED_BY: &str = "kforge.dev/managed-by";
pub const MANAGER: &str = "kforge";

/// `kubernetes.io/cluster/NAME`, the key Kubernetes cloud integrations look for.
pub fn kubernetes_cluster_key(cluster: &str) -> String {
    format!("kubernetes.io/cluster/{cluster}")
}

/// Builds the tag set of each resource of one cluster.
#[derive(Debug, Clone)]
pub struct Tagger {
    pub cluster: String,
    /// The spec's `tags`, put on everything.
    pub extra: BTreeMap<String, String>,
}

impl Tagger {
    pub fn tags(&self, logical_id: &str, more: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut t = self.extra.clone();
        t.insert(
            "Name".into(),
            format!("{}-{}", self.cluster, logical_id.replace('/', "-")),
        );
        t.insert(CLUSTER.into(), self.cluster.clone());
        t.insert(RESOURCE.into(), logical_id.into());
        t.insert(MANAGED_BY.into(), MANAGER.into());
        t.insert(kubernetes_cluster_key(&self.cluster), "owned".into());
        for (k, v) in more {
            t.insert((*k).into(), (*v).into());
        }
        t
    }
}

pub fn ec2_tag_spec(resource_type: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource_type)
        .set_tags(Some(ec2_tags(tags)))
        .build()
}

pub fn ec2_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

pub fn ec2_tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
        .collect()
}

pub fn cluster_filter(cluster: &str) -> Filter {
    Filter::builder().name(format!("tag:{CLUSTER}")).values(cluster).build()
}

/// The `tags` attribute as compared by diffs: the wanted tags, and of the actual ones only those keys. Tags added
/// by others (cost allocation, Kubernetes) are left alone.
pub fn render_subset(actual: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> String {
    let seen: BTreeMap<&String, &String> = wanted.keys().filter_map(|k| actual.get_key_value(k)).collect();
    render_pairs(seen)
}

pub fn render(tags: &BTreeMap<String, String>) -> String {
    render_pairs(tags.iter().collect())
}

fn render_pairs(pairs: BTreeMap<&String, &String>) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_carries_the_convention() {
        let t = Tagger {
            cluster: "demo".into(),
            extra: BTreeMap::from([("team".into(), "ml".into())]),
        };
        let tags = t.tags("subnet/public-us-east-1a", &[("kubernetes.io/role/elb", "1")]);
        assert_eq!(tags[CLUSTER], "demo");
        assert_eq!(tags[RESOURCE], "subnet/public-us-east-1a");
        assert_eq!(tags[MANAGED_BY], "kforge");
        assert_eq!(tags["kubernetes.io/cluster/demo"], "owned");
        assert_eq!(tags["Name"], "demo-subnet-public-us-east-1a");
        assert_eq!(tags["team"], "ml");
        assert_eq!(tags["kubernetes.io/role/elb"], "1");
    }

    #[test]
    fn subset_ignores_foreign_tags() {
        let wanted = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let actual = BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("cost".to_string(), "x".to_string()),
        ]);
        assert_eq!(render_subset(&actual, &wanted), render(&wanted));
        assert_ne!(render_subset(&BTreeMap::new(), &wanted), render(&wanted));
    }
}
