//! `vrouterctl policy`: per-vif security policy, from a JSON document or rules in words.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use control_api::api::{Policy, PolicyAction, PolicyRule, Proto, SyntaxError};
use control_api::Client;

use crate::output::{table, Out};

#[derive(Clone, Copy, ValueEnum)]
pub enum ActionArg {
    Allow,
    Deny,
    /// First packets of new flows go to the agent (pkt0), which decides them.
    Agent,
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Set a vif's policy from a JSON file (`-` = stdin) or from rules on the command line.
    Set {
        /// The vif the policy applies to.
        vif: String,
        /// A JSON policy document ({"default","ingress","egress"}).
        #[arg(long, conflicts_with_all = ["default", "ingress", "egress"])]
        file: Option<PathBuf>,
        /// What happens to packets no rule matches.
        #[arg(long, value_enum)]
        default: Option<ActionArg>,
        /// "ACTION [PROTO] [CIDR] [PORTS]", e.g. "allow tcp 198.18.0.0/15 80-90"; repeatable.
        #[arg(long)]
        ingress: Vec<String>,
        /// Same syntax as --ingress.
        #[arg(long)]
        egress: Vec<String>,
    },
    /// Show a vif's policy, rule by rule.
    Show {
        /// The vif whose policy to show.
        vif: String,
    },
    /// Remove a vif's policy: its traffic then skips the flow table.
    Del {
        /// The vif whose policy to remove.
        vif: String,
    },
}

pub async fn run(cmd: PolicyCmd, c: &Client, out: &Out) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Set {
            vif,
            file,
            default,
            ingress,
            egress,
        } => {
            let policy = match file {
                Some(path) => read_policy(&path)?,
                None => Policy {
                    default: match default {
                        Some(ActionArg::Deny) => PolicyAction::Deny,
                        Some(ActionArg::Allow) => PolicyAction::Allow,
                        Some(ActionArg::Agent) => PolicyAction::Agent,
                        None => bail!("give --default allow|deny|agent (and rules), or --file"),
                    },
                    ingress: ingress
                        .iter()
                        .map(|r| parse_rule(r))
                        .collect::<Result<_, _>>()?,
                    egress: egress
                        .iter()
                        .map(|r| parse_rule(r))
                        .collect::<Result<_, _>>()?,
                },
            };
            c.policy_set(&vif, &policy).await?;
            out.done(format!(
                "policy of vif {vif} set: default {}, {} ingress and {} egress rules",
                policy.default,
                policy.ingress.len(),
                policy.egress.len()
            ));
        }
        PolicyCmd::Show { vif } => out.show(&c.policy(&vif).await?, |p| {
            let mut rows = rule_rows("ingress", &p.ingress);
            rows.extend(rule_rows("egress", &p.egress));
            format!(
                "default {}\n{}",
                p.default,
                table(&["DIR", "#", "ACTION", "PROTO", "CIDR", "PORTS"], &rows)
            )
        })?,
        PolicyCmd::Del { vif } => {
            c.policy_del(&vif).await?;
            out.done(format!("policy of vif {vif} removed"));
        }
    }
    Ok(())
}

/// A policy document from `path`, or from stdin for `-`.
fn read_policy(path: &PathBuf) -> anyhow::Result<Policy> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a policy document", path.display()))
}

/// One rule from words: an action, then optionally a protocol, a CIDR and a port range.
fn parse_rule(text: &str) -> anyhow::Result<PolicyRule> {
    let mut words = text.split_whitespace();
    let action = match words.next() {
        Some("allow") => PolicyAction::Allow,
        Some("deny") => PolicyAction::Deny,
        Some("agent") => PolicyAction::Agent,
        other => bail!("rule {text:?}: starts with {other:?}; expected allow, deny or agent"),
    };
    let mut rule = PolicyRule {
        action,
        proto: Proto::Any,
        cidr: None,
        ports: None,
    };
    for (i, w) in words.enumerate() {
        // A bare number first is a protocol, unless it is a port range.
        if i == 0
            && !w.contains('/')
            && !w
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() && w.contains('-'))
        {
            if let Ok(p) = w.parse::<Proto>() {
                rule.proto = p;
                continue;
            }
        }
        if w.contains('/') {
            rule.cidr = Some(
                w.parse()
                    .map_err(|e: SyntaxError| anyhow::anyhow!("rule {text:?}: {e}"))?,
            );
        } else {
            rule.ports = Some(
                w.parse()
                    .map_err(|e: SyntaxError| anyhow::anyhow!("rule {text:?}: {e}"))?,
            );
        }
    }
    Ok(rule)
}

fn rule_rows(dir: &str, rules: &[PolicyRule]) -> Vec<Vec<String>> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                dir.to_string(),
                i.to_string(),
                r.action.to_string(),
                r.proto.to_string(),
                r.cidr.map_or("any".into(), |c| c.to_string()),
                r.ports.map_or("any".into(), |p| p.to_string()),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_from_words() {
        let r = parse_rule("allow tcp 198.18.0.0/15 80-90").unwrap();
        assert_eq!(r.proto, Proto::TCP);
        assert_eq!(r.cidr.unwrap().to_string(), "198.18.0.0/15");
        assert_eq!(r.ports.unwrap().to_string(), "80-90");
        let r = parse_rule("deny").unwrap();
        assert_eq!((r.action, r.proto), (PolicyAction::Deny, Proto::Any));
        let r = parse_rule("allow 47").unwrap();
        assert_eq!(r.proto, Proto::Number(47));
        assert!(parse_rule("maybe tcp").is_err());
        assert!(parse_rule("allow tcp 99999").is_err());
    }
}
