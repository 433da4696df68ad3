//! # The nftables dataplane
//!
//! The whole service table as one nftables table, `inet director`, owned by
//! the director and programmed level-triggered: a pass compares the desired
//! table ([`compile`]) with what the kernel holds, diffs the two ([`plan`])
//! and applies only the difference as one transaction: the kernel commits
//! all of it or none of it. A table that already matches (a daemon restart)
//! gets no command at all: startup adopts, never flushes. A hand-deleted
//! element, rule or chain, or `nft flush ruleset`, is a difference like any
//! other and the next pass restores it.
//!
//! ## Two ways to the kernel: the nft CLI and netlink
//!
//! nf_tables' netlink API is a bytecode (registers, expressions, set
//! descriptors, batch begin/end); speaking all of it means re-implementing
//! libnftnl plus nft's evaluator (dependency expressions such as the implicit
//! `meta nfproto` before `ip daddr`, concatenation padding, set key sizes),
//! without `unsafe` and with no maintained pure-Rust crate on this host. So
//! the structure (table, chains, set declarations, rules) goes through the
//! `nft` CLI: text in (one `nft -f` script per transaction), JSON out
//! (`nft -j list table`, libnftables-json(5)), with the kernel's own
//! validation and error positions (`/dev/stdin:LINE:COL: Error: ...`, mapped
//! back to the service that emitted the line).
//!
//! The CLI is slow at scale, though: every call fills nft's cache with every
//! chain and set of the table (40 ms at 5,000 services before the change
//! itself; 3.8 s if the script replaces a rule by handle, which makes nft
//! load every rule), and a dump takes seconds. The hot path is therefore
//! native ([`nfnl`]):
//!
//! - **No dump while nothing changed.** nf_tables counts committed
//!   transactions (`NFT_MSG_GETGEN`). A pass remembers the table it saw or
//!   wrote and the generation it belongs to; while the generation has not
//!   moved, no one (no `nft` command, no other program) has changed the
//!   ruleset, and the remembered table *is* the kernel's. Any foreign
//!   commit moves it, and the next pass dumps and repairs as before.
//!   Affinity maps are the exception (the packet path fills them without a
//!   transaction): those the plan must clean are re-read one by one.
//! - **Element changes as one netlink batch.** A destination change adds
//!   and deletes set elements and, for `rr`/`wrr`, replaces the selector
//!   rule whose `numgen inc mod N` follows the slot count. When every
//!   command of a plan has a netlink form, the plan is sent as one batch
//!   of `NEWSETELEM`/`DELSETELEM`/`NEWRULE(replace)` messages, guarded by
//!   `NFNL_BATCH_GENID`: if anyone committed since the generation the plan
//!   was made against, the kernel refuses the whole batch (`ERESTART`) and
//!   the pass dumps and plans again. Otherwise (new services, structure
//!   repairs) the plan goes to `nft -f`.
//!
//! The byte layouts of the netlink side are pinned against what nft 1.0.6
//! sends for the same commands (`testdata/nfnl/`). Measured on this host
//! (Debian 12, nft 1.0.6, 5,000 services x 4 real servers): see
//! `tests/src/bin/nft-bench.rs` and the README.
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
//! Cost model (why elements): an element add/delete is a set operation,
//! while rules are bytecode the kernel validates. A one-destination change
//! of `mh`/`sh` (fixed table size) is a handful of element commands; for
//! `rr`/`wrr` the slot count changes with the number of active servers, so
//! the service's selector rule is replaced too (in place, by handle, over
//! netlink; as `flush chain` + `add rule`s of that one chain through nft),
//! in the same transaction. Nothing else is re-emitted.
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
//! each owner gets its own transaction. A netlink batch the kernel refuses
//! applied nothing; the same plan then goes through nft, which names the
//! line and so the service.

pub mod compile;
pub mod dump;
pub mod exec;
pub mod model;
pub mod nfnl;
pub mod plan;
pub mod status;

pub use compile::Scope;
pub use exec::{FixedFlows, Flow, FlowSource, NftCli, NftError, NftExec};

use crate::dataplane::{ConnectionReset, Dataplane, DataplaneKind, DataplaneStatus, PassInput};
use crate::kernel::KernelError;
use crate::model::{DestKey, IpvsOp, KernelTable, ServiceKey};
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
    /// What the kernel held after the last pass, valid while the nf_tables
    /// generation has not moved (see "Passes without a dump").
    cache: Option<Cached>,
    paths: PathCounts,
}

/// The table as of `generation`.
struct Cached {
    generation: u32,
    ruleset: Option<Ruleset>,
    /// The `allowed_values` of every dynamic (affinity) map when cached.
    allowed: BTreeMap<String, Vec<String>>,
    /// Dynamic maps whose last plan deleted entries: established flows to
    /// a drained server can re-add them, so they are re-read every pass
    /// until one comes back clean.
    dirty: BTreeSet<String>,
}

/// How the passes so far reached the kernel (for benchmarks and tests; the
/// daemon logs the path of each pass that changed something).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathCounts {
    /// Passes that read the whole table (`nft -j list table`).
    pub dumps: u64,
    /// Passes that trusted the cached table (generation unchanged).
    pub cached: u64,
    /// Changes applied as one netlink batch.
    pub fast_batches: u64,
    /// Changes applied through `nft -f` (one or more transactions).
    pub cli_applies: u64,
    /// Fast batches the kernel refused because the ruleset had changed.
    pub generation_conflicts: u64,
}

impl NftDataplane {
    pub fn new(exec: Box<dyn NftExec>, flows: Box<dyn FlowSource>, scope: Scope) -> Self {
        NftDataplane {
            exec,
            flows,
            scope,
            cache: None,
            paths: PathCounts::default(),
        }
    }

    /// How the passes so far reached the kernel.
    pub fn path_counts(&self) -> PathCounts {
        self.paths
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
        // A fast batch refused because someone else committed first is
        // planned again once, against a fresh dump.
        for _ in 0..2 {
            if let Some(report) = self.pass_once(input) {
                return report;
            }
            self.paths.generation_conflicts += 1;
            self.cache = None;
        }
        PassReport {
            dump_error: Some(
                "the nf_tables ruleset changed under two passes in a row; next pass retries".into(),
            ),
            ..PassReport::default()
        }
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

    /// Deletes their conntrack entries (see
    /// [`crate::dataplane::ConnectionReset::Deleted`]).
    fn reset_connections(
        &mut self,
        targets: &[(ServiceKey, DestKey)],
    ) -> Result<Vec<ConnectionReset>, KernelError> {
        self.flows
            .delete_flows(targets)
            .map(|v| v.into_iter().map(ConnectionReset::Deleted).collect())
            .map_err(|detail| KernelError::Io {
                what: "deleting conntrack entries".to_string(),
                detail,
            })
    }

    /// Counted from one conntrack dump (no nft call).
    fn active_connections(
        &mut self,
        targets: &[(ServiceKey, DestKey)],
    ) -> Result<Vec<u64>, KernelError> {
        let flows = self.flows.flows().map_err(|detail| KernelError::Io {
            what: "conntrack dump".to_string(),
            detail,
        })?;
        Ok(targets
            .iter()
            .map(|(s, d)| {
                flows
                    .iter()
                    .filter(|f| f.tcp_established && f.served_by(s, d))
                    .count() as u64
            })
            .collect())
    }
}

/// How a pass's commands reached the kernel.
enum Applied {
    Nothing,
    Fast(nfnl::Applied),
    Cli,
}

impl NftDataplane {
    /// The kernel's table: the cached one when the generation has not
    /// moved (affinity maps re-read where they may hold stale entries),
    /// else a dump.
    fn read_kernel(
        &mut self,
        generation: Option<u32>,
        want: Option<&Ruleset>,
    ) -> Result<Option<Ruleset>, NftError> {
        if let (Some(g), Some(c)) = (generation, self.cache.take()) {
            if c.generation == g {
                let mut rs = c.ruleset;
                if let (Some(rs), Some(want)) = (rs.as_mut(), want) {
                    self.refresh_dynamic(rs, want, &c.allowed, &c.dirty)?;
                }
                self.paths.cached += 1;
                return Ok(rs);
            }
            tracing::info!(
                event = "nft_generation_moved",
                cached = c.generation,
                now = g,
                detail = "someone else committed to nf_tables; reading the table back"
            );
        }
        self.paths.dumps += 1;
        self.dump()
    }

    /// Re-reads the affinity maps whose cached entries cannot be trusted:
    /// the packet path adds entries without a transaction, so the cache
    /// only knows them as of the last read. Needed where the plan deletes
    /// entries: a service whose active servers changed, or whose last
    /// pass deleted some.
    fn refresh_dynamic(
        &mut self,
        rs: &mut Ruleset,
        want: &Ruleset,
        allowed: &BTreeMap<String, Vec<String>>,
        dirty: &BTreeSet<String>,
    ) -> Result<(), NftError> {
        let leaders: Vec<&String> = want
            .sets
            .iter()
            .filter(|(n, w)| {
                w.dynamic
                    && w.follows.is_none()
                    && (allowed.get(*n) != Some(&w.allowed_values) || dirty.contains(*n))
            })
            .map(|(n, _)| n)
            .collect();
        for leader in leaders {
            let followers = want
                .sets
                .iter()
                .filter(|(_, w)| w.follows.as_ref() == Some(leader))
                .map(|(n, _)| n);
            for name in std::iter::once(leader).chain(followers) {
                match self.exec.list_map(name)? {
                    Some(json) => {
                        let mut one = dump::parse(&json).map_err(NftError::Parse)?;
                        if let (Some(fresh), Some(slot)) =
                            (one.sets.remove(name), rs.sets.get_mut(name))
                        {
                            slot.elements = fresh.elements;
                        }
                    }
                    None => {
                        rs.sets.remove(name);
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies a plan: as one netlink batch guarded by `generation` when
    /// every command has a netlink form, else through nft. `None`: the
    /// generation check failed (nothing applied).
    fn apply_plan(
        &mut self,
        cmds: &[Cmd],
        generation: Option<u32>,
    ) -> Option<(BTreeMap<Owner, String>, Applied)> {
        if cmds.is_empty() {
            return Some((BTreeMap::new(), Applied::Nothing));
        }
        let fast: Option<Vec<nfnl::FastCmd>> = cmds.iter().map(|c| c.fast.clone()).collect();
        if let (Some(g), Some(fast)) = (generation, fast) {
            if fast.len() <= nfnl::MAX_BATCH_MESSAGES {
                match self.exec.apply_fast(&fast, g) {
                    Ok(applied) => {
                        tracing::info!(
                            event = "nft_applied",
                            path = "netlink",
                            commands = fast.len(),
                            generation = g
                        );
                        self.paths.fast_batches += 1;
                        return Some((BTreeMap::new(), Applied::Fast(applied)));
                    }
                    Err(nfnl::NfnlError::GenerationChanged) => return None,
                    // Nothing was applied; nft names what is wrong in
                    // terms of script lines and services.
                    Err(e) => tracing::debug!(event = "nft_fast_batch_refused", error = %e),
                }
            }
        }
        self.paths.cli_applies += 1;
        tracing::info!(event = "nft_applied", path = "nft", commands = cmds.len());
        Some((self.apply(cmds), Applied::Cli))
    }

    /// Remembers what the kernel holds after this pass, if it is known
    /// exactly: after nothing or a fast batch (the generation moved by
    /// exactly our one commit). After nft transactions the next pass dumps.
    fn remember(
        &mut self,
        generation: Option<u32>,
        want: Option<Ruleset>,
        have: Option<Ruleset>,
        cmds: &[Cmd],
        applied: Applied,
    ) {
        self.cache = None;
        let Some(g) = generation else {
            return;
        };
        // What the affinity maps were allowed to hold (the dump does not
        // know which maps are dynamic; the desired table does).
        let mut allowed = BTreeMap::new();
        if let Some(w) = &want {
            for (name, set) in &w.sets {
                if set.dynamic && set.follows.is_none() {
                    allowed.insert(name.clone(), set.allowed_values.clone());
                }
            }
        }
        let (ruleset, generation) = match applied {
            Applied::Cli => return,
            Applied::Nothing => (have, g),
            Applied::Fast(echo) => {
                let after = g.wrapping_add(1);
                if self.exec.generation() != Some(after) {
                    return;
                }
                (want.map(|w| after_fast(w, have, cmds, &echo)), after)
            }
        };
        let mut dirty = BTreeSet::new();
        for c in cmds {
            if let Some(nfnl::FastCmd::Elements {
                op: nfnl::ElemOp::Delete,
                set,
                ..
            }) = &c.fast
            {
                if allowed.contains_key(set) {
                    dirty.insert(set.clone());
                }
            }
        }
        self.cache = Some(Cached {
            generation,
            ruleset,
            allowed,
            dirty,
        });
    }

    /// One pass; `None` when its fast batch lost a generation race.
    fn pass_once(&mut self, input: &PassInput<'_>) -> Option<PassReport> {
        let mut report = PassReport::default();
        let compiled = compile::compile(input.desired, input.snat, self.scope);
        let generation = self.exec.generation();
        let have = match self.read_kernel(generation, compiled.ruleset.as_ref()) {
            Ok(h) => h,
            Err(e) => {
                report.dump_error = Some(format!("nft -j list table inet director: {e}"));
                return Some(report);
            }
        };
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
        // The netlink form first (rules replaced in place); if any command
        // has no netlink form, the whole plan goes to nft in nft's cheap form.
        let mut cmds = Vec::new();
        if generation.is_some() {
            cmds = plan::plan_with(want.as_ref(), have.as_ref(), plan::RuleEdits::InPlace);
        }
        if generation.is_none() || cmds.iter().any(|c| c.fast.is_none()) {
            cmds = plan::plan(want.as_ref(), have.as_ref());
        }
        let (failed, applied) = self.apply_plan(&cmds, generation)?;

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
        self.remember(generation, want, have, &cmds, applied);
        Some(report)
    }
}

/// The table after a fast batch: the desired one, with the kernel handles
/// of its rules (kept ones from the dump, replaced ones from the kernel's
/// echo) and the affinity maps' entries as read minus those deleted.
fn after_fast(
    mut want: Ruleset,
    have: Option<Ruleset>,
    cmds: &[Cmd],
    echo: &nfnl::Applied,
) -> Ruleset {
    let have = have.unwrap_or_default();
    for (name, chain) in &mut want.chains {
        let old = have.chains.get(name);
        for (i, r) in chain.rules.iter_mut().enumerate() {
            let kept = old
                .and_then(|o| o.rules.get(i))
                .filter(|h| h.comment == r.comment)
                .and_then(|h| h.handle);
            r.handle = kept.or_else(|| {
                echo.new_rules
                    .iter()
                    .find(|(c, _, comment)| c == name && *comment == r.comment)
                    .map(|(_, handle, _)| *handle)
            });
        }
    }
    for (name, set) in &mut want.sets {
        if !set.dynamic {
            continue;
        }
        if let Some(h) = have.sets.get(name) {
            set.elements = h.elements.clone();
        }
        for c in cmds {
            if let Some(nfnl::FastCmd::Elements {
                op: nfnl::ElemOp::Delete,
                set: target,
                elems,
                ..
            }) = &c.fast
            {
                if target == name {
                    for (k, _) in elems {
                        set.elements.remove(k);
                    }
                }
            }
        }
    }
    want
}

#[cfg(test)]
mod tests;
