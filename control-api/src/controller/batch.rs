//! `PATCH /vrfs/{vrf}/routes`: many routes of one VRF set and removed as one change. Every
//! item is checked before any is applied (the first bad one refuses the whole batch, named by
//! its place), the dataplane takes them one by one (a refusal undoes those it took), the model
//! commits them together, and they are saved with one journal write and one fsync. On the
//! change stream each item is its own `route-set` / `route-del`, as if sent one by one.

use std::collections::BTreeMap;

use tracing::{info, warn};

use super::{check_range, Controller};
use crate::api::{IpPrefix, Route, RouteBatch, RouteBatchResult, ROUTE_BATCH_MAX};
use crate::dataplane::{Change, TableChange};
use crate::error::Error;
use crate::journal::Record;
use crate::model::VRF_MAX;

/// What an item replaces: the route it changes or removes (none: it creates one).
type Before = Option<Route>;

fn in_batch(item: String, why: Error) -> Error {
    Error::InBatch {
        item,
        why: Box::new(why),
    }
}

/// The checks that need no model: the size of each list, and each prefix at most once (a
/// batch that contradicts itself is a conflict: 409).
fn check_shape(b: &RouteBatch) -> Result<(), Error> {
    for (field, n) in [("set", b.set.len()), ("delete", b.delete.len())] {
        if n > ROUTE_BATCH_MAX {
            return Err(Error::field(
                field,
                format!("{n} items; a batch takes at most {ROUTE_BATCH_MAX} in each list"),
            ));
        }
    }
    // Each item by its list and place, named only for the message.
    let name = |(list, i): (&str, usize)| format!("{list}[{i}]");
    let mut seen: BTreeMap<IpPrefix, (&str, usize)> = BTreeMap::new();
    let items = b
        .set
        .iter()
        .enumerate()
        .map(|(i, r)| (("set", i), r.prefix))
        .chain(
            b.delete
                .iter()
                .enumerate()
                .map(|(i, p)| (("delete", i), *p)),
        );
    for (item, prefix) in items {
        if let Some(first) = seen.insert(prefix, item) {
            return Err(Error::Conflict(format!(
                "{}: {prefix} is in the batch already as {}; name each prefix once",
                name(item),
                name(first)
            )));
        }
    }
    Ok(())
}

impl Controller {
    pub fn route_batch(&self, vrf: u32, batch: &RouteBatch) -> Result<RouteBatchResult, Error> {
        let _span = tracing::info_span!(
            "route_batch",
            vrf,
            set = batch.set.len(),
            delete = batch.delete.len()
        )
        .entered();
        check_range("vrf", vrf, 0, VRF_MAX)?;
        check_shape(batch)?;
        let held = self.change();
        let mut result = RouteBatchResult::default();
        let mut changes: Vec<(TableChange, Before)> = Vec::with_capacity(batch.len());
        {
            let model = self.model();
            for (i, r) in batch.set.iter().enumerate() {
                let item = || format!("set[{i}] ({})", r.prefix);
                model
                    .check_route_set(vrf, r)
                    .map_err(|e| in_batch(item(), e))?;
                let before = model.route(vrf, &r.prefix).cloned();
                match before {
                    Some(_) => result.replaced += 1,
                    None => result.created += 1,
                }
                let route = r.clone();
                changes.push((TableChange::RouteSet { vrf, route }, before));
            }
            for (i, prefix) in batch.delete.iter().enumerate() {
                model
                    .check_route_del(vrf, prefix)
                    .map_err(|e| in_batch(format!("delete[{i}]"), e))?;
                let before = model.route(vrf, prefix).cloned();
                result.deleted += 1;
                let prefix = *prefix;
                changes.push((TableChange::RouteDel { vrf, prefix }, before));
            }
        }
        for (done, (change, _)) in changes.iter().enumerate() {
            if let Err(e) = self.apply(&Change::Table(change.clone())) {
                self.undo(&changes[..done]);
                let item = match change {
                    TableChange::RouteSet { route, .. } => {
                        format!("set[{done}] ({})", route.prefix)
                    }
                    _ => format!("delete[{}]", done - batch.set.len()),
                };
                return Err(in_batch(item, e));
            }
        }
        {
            let mut model = self.model();
            for (change, _) in &changes {
                model.commit_table(change);
            }
        }
        let records: Vec<Record> = changes.into_iter().map(|(c, _)| Record::Table(c)).collect();
        self.save_all(&held, records)?;
        info!(
            created = result.created,
            replaced = result.replaced,
            deleted = result.deleted,
            "routes changed"
        );
        Ok(result)
    }

    /// Puts back in the dataplane what `applied` changed, last first.
    fn undo(&self, applied: &[(TableChange, Before)]) {
        for (change, before) in applied.iter().rev() {
            let vrf = match change {
                TableChange::RouteSet { vrf, .. } | TableChange::RouteDel { vrf, .. } => *vrf,
                _ => continue,
            };
            let back = match (change, before) {
                (_, Some(route)) => TableChange::RouteSet {
                    vrf,
                    route: route.clone(),
                },
                (TableChange::RouteSet { route, .. }, None) => TableChange::RouteDel {
                    vrf,
                    prefix: route.prefix,
                },
                _ => continue,
            };
            if let Err(e) = self.dataplane.apply(&Change::Table(back)) {
                warn!("undoing part of a refused route batch: {e}");
            }
        }
    }

    /// [`Controller::save`] for many changes: each on the change stream, all in one journal
    /// write (or a snapshot when one is due). Call with `changing` held, after the commit.
    fn save_all(
        &self,
        _held: &std::sync::MutexGuard<'_, ()>,
        records: Vec<Record>,
    ) -> Result<(), Error> {
        self.save_records(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(p: &str) -> Route {
        Route {
            prefix: p.parse().unwrap(),
            nexthop: 1,
            label: None,
        }
    }

    #[test]
    fn shape_checks_name_the_limit_and_the_repeated_prefix() {
        let mut b = RouteBatch {
            set: vec![route("198.18.1.0/24"), route("198.18.2.0/24")],
            delete: vec!["198.18.3.0/24".parse().unwrap()],
        };
        assert!(check_shape(&b).is_ok());
        b.delete.push("198.18.1.0/24".parse().unwrap());
        let e = check_shape(&b).unwrap_err();
        assert_eq!(e.status(), 409);
        assert!(e.to_string().contains("delete[1]"), "{e}");
        assert!(e.to_string().contains("set[0]"), "{e}");
        let big = RouteBatch {
            set: (0..=ROUTE_BATCH_MAX)
                .map(|i| route(&format!("198.18.{}.{}/32", i / 256, i % 256)))
                .collect(),
            delete: Vec::new(),
        };
        let e = check_shape(&big).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("`set`: 4097 items"), "{e}");
        assert!(e.to_string().contains("at most 4096"), "{e}");
    }
}
