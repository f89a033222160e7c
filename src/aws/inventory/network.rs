//! The cluster's VPCs, subnets, gateways, addresses, route tables and security groups (by tag), and the network
//! interfaces its pods left behind.

use super::*;

impl Inventory {
    pub async fn vpcs(&self, aws: &Aws) -> anyhow::Result<&[Vpc]> {
        self.vpcs
            .get_or_try_init(|| async {
                Ok(self.own(paged!(
                    aws,
                    describe_vpcs,
                    self.filters(),
                    vpcs,
                    "DescribeVpcs",
                    self.what("VPC")
                )))
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn subnets(&self, aws: &Aws) -> anyhow::Result<&[Subnet]> {
        self.subnets
            .get_or_try_init(|| async {
                Ok(self.own(paged!(
                    aws,
                    describe_subnets,
                    self.filters(),
                    subnets,
                    "DescribeSubnets",
                    self.what("subnet")
                )))
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn internet_gateways(&self, aws: &Aws) -> anyhow::Result<&[InternetGateway]> {
        self.internet_gateways
            .get_or_try_init(|| async {
                Ok(self.own(paged!(
                    aws,
                    describe_internet_gateways,
                    self.filters(),
                    internet_gateways,
                    "DescribeInternetGateways",
                    self.what("internet gateway")
                )))
            })
            .await
            .map(Vec::as_slice)
    }

    /// NAT gateways that exist or are on their way (deleted and failed ones are history, not resources).
    pub async fn nat_gateways(&self, aws: &Aws) -> anyhow::Result<&[NatGateway]> {
        self.nat_gateways
            .get_or_try_init(|| async {
                let mut filters = self.filters();
                filters.push(
                    Filter::builder()
                        .name("state")
                        .values("pending")
                        .values("available")
                        .values("deleting")
                        .build(),
                );
                Ok(self.own(paged!(
                    aws,
                    describe_nat_gateways,
                    set_filter,
                    filters,
                    nat_gateways,
                    "DescribeNatGateways",
                    self.what("NAT gateway")
                )))
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn addresses(&self, aws: &Aws) -> anyhow::Result<&[Address]> {
        self.addresses
            .get_or_try_init(|| async {
                let out = aws
                    .ec2()
                    .describe_addresses()
                    .set_filters(Some(self.filters()))
                    .send()
                    .await
                    .map_err(aws_err(self.what("elastic IP"), "DescribeAddresses"))?;
                Ok::<_, anyhow::Error>(self.own(out.addresses().to_vec()))
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn route_tables(&self, aws: &Aws) -> anyhow::Result<&[RouteTable]> {
        self.route_tables
            .get_or_try_init(|| async {
                Ok(self.own(paged!(
                    aws,
                    describe_route_tables,
                    self.filters(),
                    route_tables,
                    "DescribeRouteTables",
                    self.what("route table")
                )))
            })
            .await
            .map(Vec::as_slice)
    }

    /// The route tables tagged `logical` as they are now, not as the run's snapshot saw them: a create's second
    /// look for a twin made by a crashed run's late request.
    pub async fn route_tables_now(&self, aws: &Aws, logical: &str) -> anyhow::Result<Vec<RouteTable>> {
        let mut filters = self.filters();
        filters.push(
            Filter::builder()
                .name(format!("tag:{}", tags::RESOURCE))
                .values(logical)
                .build(),
        );
        let tables = self.own(paged!(
            aws,
            describe_route_tables,
            filters,
            route_tables,
            "DescribeRouteTables",
            self.what("route table")
        ));
        Ok(keep_tagged(tables, |t| t.tags(), tags::RESOURCE, Some(logical)))
    }

    /// Security groups of the cluster: kforge's own, and those Kubernetes created for it (load balancers).
    pub async fn security_groups(&self, aws: &Aws) -> anyhow::Result<&[SecurityGroup]> {
        self.security_groups
            .get_or_try_init(|| async {
                let owned = vec![
                    Filter::builder()
                        .name(format!("tag:{}", tags::kubernetes_cluster_key(&self.cluster)))
                        .values("owned")
                        .build(),
                ];
                // Two listings (EC2 filters cannot OR two tag keys), asked at once.
                let (groups, owned): (Vec<SecurityGroup>, Vec<SecurityGroup>) = tokio::try_join!(
                    async {
                        Ok::<_, anyhow::Error>(paged!(
                            aws,
                            describe_security_groups,
                            self.filters(),
                            security_groups,
                            "DescribeSecurityGroups",
                            self.what("security group")
                        ))
                    },
                    async {
                        Ok::<_, anyhow::Error>(paged!(
                            aws,
                            describe_security_groups,
                            owned,
                            security_groups,
                            "DescribeSecurityGroups",
                            self.what("security group")
                        ))
                    },
                )?;
                let mut groups = self.own(groups);
                let k8s = tags::kubernetes_cluster_key(&self.cluster);
                for g in keep_tagged(owned, |g| g.tags(), &k8s, Some("owned")) {
                    if !groups.iter().any(|x| x.group_id() == g.group_id()) {
                        groups.push(g);
                    }
                }
                Ok::<_, anyhow::Error>(groups)
            })
            .await
            .map(Vec::as_slice)
    }

    /// Detached network interfaces the cluster's pods left behind: those the VPC CNI tagged with the cluster's
    /// name, and in a VPC kforge created for it those the CNI names `aws-K8S-...` (older CNIs did not tag). Attached
    /// ones go with their instance; ENIs of NAT gateways, load balancers and the control plane with their owner.
    pub async fn leftover_network_interfaces(&self, aws: &Aws) -> anyhow::Result<Vec<NetworkInterface>> {
        let own_vpcs: Vec<String> = self
            .vpcs(aws)
            .await?
            .iter()
            .filter_map(|v| v.vpc_id().map(str::to_string))
            .collect();
        let available = || Filter::builder().name("status").values("available").build();
        let mut out: Vec<NetworkInterface> = Vec::new();
        if !own_vpcs.is_empty() {
            let filters = vec![
                available(),
                Filter::builder().name("vpc-id").set_values(Some(own_vpcs)).build(),
            ];
            let in_vpcs: Vec<NetworkInterface> = paged!(
                aws,
                describe_network_interfaces,
                filters,
                network_interfaces,
                "DescribeNetworkInterfaces",
                self.what("network interface")
            );
            out.extend(
                in_vpcs
                    .into_iter()
                    .filter(|e| e.description().is_some_and(|d| d.starts_with("aws-K8S-"))),
            );
        }
        let filters = vec![
            available(),
            Filter::builder()
                .name("tag:cluster.k8s.amazonaws.com/name")
                .values(&self.cluster)
                .build(),
        ];
        let tagged: Vec<NetworkInterface> = paged!(
            aws,
            describe_network_interfaces,
            filters,
            network_interfaces,
            "DescribeNetworkInterfaces",
            self.what("network interface")
        );
        for eni in tagged {
            if !out
                .iter()
                .any(|e| e.network_interface_id() == eni.network_interface_id())
            {
                out.push(eni);
            }
        }
        Ok(out)
    }
}
