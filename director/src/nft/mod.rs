//! # The nftables dataplane
//!
//! The whole service table as one nftables table, `inet director`, owned by
//! the director and programmed level-triggered: every pass dumps it
//! (`nft -j list table inet director`), compiles the desired table into the
//! same shape ([`compile`]), diffs the two ([`plan`]) and applies only the
//! difference as one `nft -f` script, which nft sends as one netlink batch:
//! the kernel commits all of it or none of it. A table that already matches
//! (a daemon restart) gets no command at all: startup adopts, never flushes.
//! A hand-deleted element, rule or chain, or `nft flush ruleset`, is a
//! difference like any other and the next pass restores it.
//!
//! ## Why the nft CLI (text in, JSON out) and not netlink
//!
//! nf_tables' netlink API is a bytecode (registers, expressions, set
//! descriptors, batch begin/end); speaking it directly means re-implementing
//! libnftnl plus nft's evaluator (dependency expressions such as the implicit
//! `meta nfproto` before `ip daddr`, concatenation padding, set key sizes),
//! without `unsafe` and with no maintained pure-Rust crate on this host. The
//! CLI gives us the kernel's own validation and error positions
//! (`/dev/stdin:LINE:COL: Error: ...`, mapped back to the service that
//! emitted the line) and a documented JSON dump (libnftables-json(5)). Its
//! cost is a process and a cache fill per call: measured on this host (Debian
//! 12, kernel 6.1, nft 1.0.6, 5,000 services x 4 real servers), see
//! `tests/src/bin/nft-bench.rs` and the report in the commit log; the
//! per-destination churn is kept in set *elements* precisely because an
//! element change is the cheapest transaction nft can make.
//!
//! ## Ruleset shape
//!
//! ```text
//! table inet director
//!   map svc4/svc6  addr . l4proto . port : verdict   -> jump svc_<id>
//!   map fwm4/fwm6  mark : verdict                    -> jump svc_<id>
//!   chain dispatch      fwm4, fwm6, svc4, svc6 vmaps (fwmark first, as IPVS)
//!   chain prerouting    nat prerouting -100: jump dispatch   (remote clients)
//!   chain output        nat output -100:     jump dispatch   (local clients)
//!   chain svc_<id>      per service, rules stable under destination churn:
//!     [persistent] meta l4proto tcp dnat ip addr . port to ip saddr & MASK map @aff_<id>
//!     meta l4proto tcp dnat ip addr . port to <selector> map @sel_<id>
//!     meta l4proto tcp drop comment "director sched=.. flags=.. timeout=.. mask=.."
//!   map sel_<id>        slot -> real server (the selection)
//!   map reg_<id>        real server -> weight (registry: drained ones too)
//!   map aff_<id>        masked client -> real server (dynamic, timeout)
//!   chain affu_<id>     update @aff_<id> { masked saddr : daddr . dport }
//!   map affd4/6, affm4/6  service -> jump affu_<id>
//!   chain postnat       filter prerouting -90 (after DNAT): affinity vmaps
//!   chain postnat_out   filter output -90: the same for local clients
//!   sets cin4/cout4/cnew4 (and 6), `counter` flag: one element per
//!                       destination, VIP . l4proto . port . dest . dport
//!   chain forward       filter forward 0: counters, accept established and
//!                       new flows to a VIP (set vip4/vip6); policy accept
//!   chain postrouting   nat postrouting 100: [[snat]] by ct original daddr
//!                       (maps snat4/snat6, sets snatvip4/snatvip6)
//! ```
//!
//! `<id>` is a pure function of the service key (`tcp_c0000264_80`,
//! `fwm4_100`), so the dump names its services. `<selector>` is:
//!
//! - `rr`: `numgen inc mod N`, one slot per active server in address order;
//! - `wrr`: `numgen inc mod W`, W = sum of the gcd-reduced weights, slots in
//!   smooth weighted order (weights 2,1 give A,B,A: consecutive connections
//!   alternate); above [`compile::MAX_WRR_SLOTS`] weights are scaled down;
//! - `sh`: `jhash ip saddr mod 256 seed 0x64697231`, 256 buckets filled as
//!   ip_vs_sh.c does (each server `weight` consecutive buckets, round robin);
//! - `mh`: `jhash ip saddr mod M seed 0x64697231`, the slots of
//!   [`crate::maglev::build`] with M = `maglev_table_size`. The seed is fixed
//!   ([`compile::JHASH_SEED`]) and the backends are sorted by address, so two
//!   directors with the same config send a flow to the same real server.
//!
//! With the `sh-port`/`mh-port` flag the hash input is `ip saddr . th sport`.
//! Weight 0 (drain) removes the server from the selection map but keeps it in
//! the registry; conntrack keeps the DNAT binding of its established flows.
//!
//! Cost model (why elements): rules and chains are validated by the kernel
//! on every change of the table they are in, and nft rewrites a rule as a
//! delete + add; an element add/delete is a set operation. A one-destination
//! change of `mh`/`sh` (fixed table size) is a handful of element commands;
//! for `rr`/`wrr` the slot count changes with the number of active servers,
//! so the service's own chain (3 rules) is rewritten too, in the same
//! transaction. Nothing else is re-emitted.
//!
//! ## Persistence
//!
//! `aff_<id>` maps the client address masked with the granularity to the
//! real server. The service chain looks it up first; on a miss the selector
//! picks, and the `postnat` chain (after DNAT, so `ip daddr` is the real
//! server; `ct status dnat`, original direction) `update`s the entry with
//! `timeout` — refreshed by every packet of the client, so it expires
//! `timeout` after last use. The pass deletes entries pointing at a drained
//! or removed server. Entries are per service, as IPVS templates are.
//!
//! ## Status
//!
//! See [`status`]: services from the chains' spec comments, destinations
//! from the registries, stats from the counter sets' element counters, connection counts
//! from a [`FlowSource`]. What cannot be counted, and is therefore always 0:
//! rates (no estimator); counters of fwmark services and of port-0
//! destinations (their counter key needs the VIP port and the real port,
//! which a fwmark service does not have, and the reply direction carries no
//! mark); traffic of clients on the director itself (the counters sit in
//! the forward hook).
//!
//! ## Errors
//!
//! A service that cannot be expressed (scheduler other than rr/wrr/sh/mh,
//! a forwarding method other than NAT, thresholds, port-0 services, mixed
//! port-0 and explicit destination ports, a bad maglev size) is reported
//! with its name and left as it is in the kernel. A refused transaction is
//! retried without the services nft blamed (by line number), so good
//! services still land and the bad one is named; if nft blames no line,
//! each owner gets its own transaction.

pub mod compile;
pub mod dump;
pub mod exec;
pub mod model;
pub mod plan;
pub mod status;

pub use compile::Scope;
pub use exec::{FixedFlows, Flow, FlowSource, NftCli, NftError, NftExec};

use crate::dataplane::{Dataplane, DataplaneKind, DataplaneStatus, PassInput};
use crate::kernel::KernelError;
use crate::model::{IpvsOp, KernelTable, ServiceKey};
use crate::reconcile::{self, OpFailure, PassReport};
use model::{Owner, Ruleset};
use plan::Cmd;
use std::collections::{BTreeMap, BTreeSet};

/// How many times a pass retries without the services nft blamed before it
/// falls back to one transaction per owner.
const MAX_BLAME_ROUNDS: usize = 8;

/// The nftables dataplane (see the module docs).
pub struct NftDataplane {
    exec: Box<dyn NftExec>,
    flows: Box<dyn FlowSource>,
    scope: Scope,
}

impl NftDataplane {
    pub fn new(exec: Box<dyn NftExec>, flows: Box<dyn FlowSource>, scope: Scope) -> Self {
        NftDataplane { exec, flows, scope }
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Dumps and parses the table (`None`: it does not exist).
    pub fn dump(&mut self) -> Result<Option<Ruleset>, NftError> {
        match self.exec.list()? {
            None => Ok(None),
            Some(json) => dump::parse(&json).map(Some).map_err(NftError::Parse),
        }
    }

    /// Applies `cmds`; returns the owners whose commands failed, with why.
    /// One transaction first; when it fails, again without the owners nft
    /// blamed; as a last resort one transaction per owner.
    fn apply(&mut self, cmds: &[Cmd]) -> BTreeMap<Owner, String> {
        let mut failed: BTreeMap<Owner, String> = BTreeMap::new();
        for _ in 0..MAX_BLAME_ROUNDS {
            let batch: Vec<&Cmd> = cmds
                .iter()
                .filter(|c| !failed.contains_key(&c.owner))
                .collect();
            if batch.is_empty() {
                return failed;
            }
            let err = match self.exec.apply(&plan::script(&batch)) {
                Ok(()) => return failed,
                Err(e) => e,
            };
            let blamed: BTreeSet<Owner> = err
                .lines()
                .into_iter()
                .filter_map(|l| batch.get(l.checked_sub(1)?))
                .map(|c| c.owner.clone())
                .collect();
            if blamed.is_empty() {
                break;
            }
            for owner in blamed {
                let lines: Vec<String> = err
                    .lines()
                    .into_iter()
                    .filter_map(|l| batch.get(l.checked_sub(1)?).map(|c| (l, c)))
                    .filter(|(_, c)| c.owner == owner)
                    .map(|(_, c)| c.text.chars().take(200).collect())
                    .collect();
                failed.insert(owner, format!("{} (command: {})", err, lines.join(" | ")));
            }
        }
        // Per-owner transactions: global objects first, services after.
        let mut owners: Vec<Owner> = Vec::new();
        for c in cmds {
            if !failed.contains_key(&c.owner) && !owners.contains(&c.owner) {
                owners.push(c.owner.clone());
            }
        }
        owners.sort();
        for owner in owners {
            let batch: Vec<&Cmd> = cmds.iter().filter(|c| c.owner == owner).collect();
            if let Err(e) = self.exec.apply(&plan::script(&batch)) {
                failed.insert(owner, e.to_string());
            }
        }
        failed
    }
}

/// Copies everything `have` holds for service `id` into `want`: a service
/// that failed to compile keeps its kernel objects untouched.
fn freeze(want: &mut Ruleset, have: &Ruleset, id: &str) {
    let owner = Owner::Service(id.to_string());
    for (name, s) in &have.sets {
        if s.owner == owner {
            let mut keep = s.clone();
            keep.decl = String::new();
            want.sets.insert(name.clone(), keep);
        }
    }
    for (name, s) in &have.sets {
        for (k, e) in &s.elements {
            if e.owner == owner {
                if let Some(w) = want.sets.get_mut(name) {
                    w.elements.insert(k.clone(), e.clone());
                }
            }
        }
    }
    for (name, c) in &have.chains {
        if c.owner == owner {
            want.chains.insert(name.clone(), c.clone());
        }
    }
    for (name, c) in &have.counters {
        if c.0 == owner {
            want.counters.insert(name.clone(), c.clone());
        }
    }
    // Elements the compiler wanted for this service in shared maps go too.
    for s in want.sets.values_mut() {
        s.elements.retain(|k, e| {
            e.owner != owner
                || have
                    .sets
                    .values()
                    .any(|h| h.elements.get(k).is_some_and(|he| he.owner == owner))
        });
    }
}

fn nft_to_kernel(what: &str, e: NftError) -> KernelError {
    match e {
        NftError::Parse(detail) => KernelError::Decode {
            what: what.to_string(),
            detail,
        },
        other => KernelError::Io {
            what: what.to_string(),
            detail: other.to_string(),
        },
    }
}

impl Dataplane for NftDataplane {
    fn kind(&self) -> DataplaneKind {
        DataplaneKind::Nftables
    }

    fn pass(&mut self, input: &PassInput<'_>) -> PassReport {
        let mut report = PassReport::default();
        let have = match self.dump() {
            Ok(h) => h,
            Err(e) => {
                report.dump_error = Some(format!("nft -j list table inet director: {e}"));
                return report;
            }
        };
        let compiled = compile::compile(input.desired, input.snat, self.scope);
        report
            .nat_errors
            .extend(compiled.snat_errors.iter().cloned());

        let services = self.scope == Scope::Services;
        let logical: Vec<IpvsOp> = if services {
            let observed = status::table(have.as_ref(), &[]);
            let ops = reconcile::diff(input.desired, &observed, true);
            report.dump = Some(observed);
            ops
        } else {
            Vec::new()
        };

        let mut want = compiled.ruleset;
        if let (Some(w), Some(h)) = (want.as_mut(), have.as_ref()) {
            for key in compiled.errors.keys() {
                freeze(w, h, &model::service_id(key));
            }
        }
        let cmds = plan::plan(want.as_ref(), have.as_ref());
        let failed = if cmds.is_empty() {
            BTreeMap::new()
        } else {
            self.apply(&cmds)
        };

        let key_of = |o: &Owner| match o {
            Owner::Service(id) => model::parse_service_id(id),
            Owner::Global => None,
        };
        let mut failed_keys: BTreeMap<ServiceKey, String> = compiled.errors.clone();
        for (owner, err) in &failed {
            match key_of(owner) {
                Some(k) if services => {
                    failed_keys.entry(k).or_insert_with(|| err.clone());
                }
                _ => report
                    .nat_errors
                    .push(format!("table inet director: {err}")),
            }
        }
        for op in logical {
            let key = op.service_key();
            match failed_keys.get(&key) {
                Some(err) => report.failed.push(OpFailure {
                    service_name: input.desired.name_of(&key).map(str::to_string),
                    error: err.clone(),
                    errno: None,
                    op,
                }),
                None => report.applied.push(op),
            }
        }
        // Failures with no logical op (a repair that failed) still name the
        // service.
        for (key, err) in &failed_keys {
            if !report.failed.iter().any(|f| f.op.service_key() == *key) {
                let name = input
                    .desired
                    .name_of(key)
                    .map_or_else(|| key.to_string(), str::to_string);
                report.nat_errors.push(format!("service {name}: {err}"));
            }
        }
        // Physical changes no logical op explains are repairs.
        let explained: BTreeSet<ServiceKey> =
            report.applied.iter().map(IpvsOp::service_key).collect();
        for c in &cmds {
            if c.what.is_empty() || failed.contains_key(&c.owner) {
                continue;
            }
            let explained = key_of(&c.owner).is_some_and(|k| explained.contains(&k));
            if !explained {
                report.repairs.push(c.what.clone());
            }
        }
        report
    }

    fn status(&mut self) -> Result<DataplaneStatus, KernelError> {
        Ok(DataplaneStatus {
            table: self.table()?,
            timeouts: None,
            sync_daemons: Vec::new(),
        })
    }

    fn table(&mut self) -> Result<KernelTable, KernelError> {
        let rs = self
            .dump()
            .map_err(|e| nft_to_kernel("nft -j list table inet director", e))?;
        let flows = self.flows.flows().map_err(|detail| KernelError::Io {
            what: "conntrack dump".to_string(),
            detail,
        })?;
        Ok(status::table(rs.as_ref(), &flows))
    }
}

#[cfg(test)]
mod tests;
