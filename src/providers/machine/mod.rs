//! What kforge's own EC2 machines are made of: the imported SSH key pair, the IAM instance profiles, the machine
//! image (resolved from a public SSM parameter) and single instances (masters, bastion) started from a launch
//! template. Worker groups are Auto Scaling groups (`asg`).
//!
//! One file per kind: `key_pair`, `instance_profile`, `image`, `instance`.

use crate::aws::inventory::logical_id;
use crate::delete::{Doomed, Kind, Order};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{
    HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceStateName, LaunchTemplateSpecification, ResourceType,
};
use base64::Engine as _;
use sha2::Digest as _;

use crate::aws::inventory::{by_logical_id, role_path};
use crate::aws::tags::{ec2_tag_map, ec2_tag_spec, render, render_subset};
use crate::aws::{Aws, ErrorClass, aws_err, class_of, error_code, is_not_found};
use crate::engine::{
    Change, Ctx, Desired, ImmutableChange, Inputs, Mutability, Observed, Outputs, Phase, Resource, Step, diff_attrs,
    resource_metadata,
};
use crate::model::MachineImage;
use crate::providers::iam::iam_tags;
use crate::providers::network::retag;

mod image;
mod instance;
mod instance_profile;
mod key_pair;
pub use image::*;
pub use instance::*;
pub use instance_profile::*;
pub use key_pair::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graviton_types_are_arm64() {
        for t in ["m7g.large", "c6gn.xlarge", "t4g.micro", "r8g.2xlarge", "m6gd.large"] {
            assert_eq!(architecture(t), "arm64", "{t}");
        }
        for t in [
            "m6i.large",
            "t3.medium",
            "m6a.xlarge",
            "g5.xlarge",
            "p4d.24xlarge",
            "c5n.large",
        ] {
            assert_eq!(architecture(t), "x86_64", "{t}");
        }
    }

    #[test]
    fn public_key_fingerprint_is_ssh_keygens() {
        // What `ssh-keygen -lf` printed for this key.
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm kforge-test";
        assert_eq!(
            public_key_fingerprint(line).unwrap(),
            "SHA256:QVSYP1nZPKQJHvsAQoPXmL4+TRPArXrch6Ff4dt29x0"
        );
        assert!(public_key_fingerprint("ssh-ed25519 not-base64!").is_none());
    }
}
