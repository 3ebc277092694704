//! Per-vif security policy: rule counts and which rules may name ports.

use super::{Model, POLICY_RULES_MAX};
use crate::api::{Policy, PolicyRule};
use crate::error::Error;

impl Model {
    pub fn check_policy_set(&self, name: &str, policy: &Policy) -> Result<u32, Error> {
        let vif = self.vif(name)?;
        for (dir, rules) in [("ingress", &policy.ingress), ("egress", &policy.egress)] {
            if rules.len() > POLICY_RULES_MAX {
                return Err(Error::field(
                    dir,
                    format!(
                        "{} rules is more than the {POLICY_RULES_MAX} allowed",
                        rules.len()
                    ),
                ));
            }
            for (i, rule) in rules.iter().enumerate() {
                check_rule(&format!("{dir}[{i}]"), rule)?;
            }
        }
        Ok(vif.spec.index)
    }

    pub fn commit_policy(&mut self, name: &str, policy: Option<Policy>) {
        if let Some(v) = self.vifs.get_mut(name) {
            v.policy = policy;
        }
    }
}

fn check_rule(field: &str, rule: &PolicyRule) -> Result<(), Error> {
    if let Some(ports) = rule.ports {
        if !rule.proto.has_ports() {
            return Err(Error::field(
                format!("{field}.ports"),
                format!(
                    "ports {ports} only apply to tcp, udp or sctp, not to proto {}",
                    rule.proto
                ),
            ));
        }
    }
    Ok(())
}
