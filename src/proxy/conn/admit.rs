//! The admit phase: what the head says ([`ReqInfo`]), refusals that need no upstream
//! (a signed hop-by-hop field), the key and its tier, the limit decision ([`Admission`]),
//! the denial (SlowDown — or a rule's 403 — with the body drained or the connection closed)
//! and the rate-limit headers of an admitted request. With `[[rules]]` the decision is made
//! in `conn::rules` (every matching rule and the tier together). Must not touch upstream
//! connections.

use std::time::Instant;

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use crate::config::VerifyConfig;
use crate::config::{ExpectDenied, Method};
use crate::http::{BodyFraming, BodyProgress, signed_hop_by_hop};
use crate::identity::{AuthMethod, Identified, identify, sigv4_signed_headers};
use crate::limit::Decision;
use crate::limit::multi::DenyKind;
use crate::sigverify::{
    DEFAULT_SIGNING_KEY_CACHE, RequestParts, SigningKeyCache, VerifyError, verify,
};
use crate::stats::method_index;

use super::super::bufio::{BufPool, read_append};
use super::super::client_addr::client_ip;
use super::super::headers::{rate_limit_headers, retry_headers};
use super::super::limiter;
use super::super::{Snapshot, Worker};
use super::{Answer, Conn, Fail, ReqInfo};

/// Why a request is answered before the limiter sees it (nothing is charged).
pub(super) enum Refusal {
    /// More than one auth mechanism, or an auth parameter twice (what was doubled): the
    /// store may authenticate another key than the one tollgate would charge.
    TwoKeys(&'static str),
    /// `[limits.verify]`: the signature does not verify (or is malformed, expired …).
    Signature(VerifyError),
    /// `[limits.verify]`: the verified key is not the key identified for the limiter.
    KeyMismatch,
}

/// With `[limits.verify]`: Ok(true) when the request carries a valid S3 signature by the
/// identified key, Ok(false) when it carries none.
fn verified(
    w: &Worker,
    v: &VerifyConfig,
    parts: &RequestParts<'_>,
    id: &Identified<'_>,
) -> Result<bool, Refusal> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut cache = w.sig_cache.borrow_mut();
    let cache = cache.get_or_insert_with(|| SigningKeyCache::new(DEFAULT_SIGNING_KEY_CACHE));
    match verify(parts, &*v.secrets, cache, now) {
        Err(e) => Err(Refusal::Signature(e)),
        Ok(None) => Ok(false),
        Ok(Some(ok)) if Some(&*ok.access_key) == id.key && ok.method == id.method => Ok(true),
        Ok(Some(_)) => Err(Refusal::KeyMismatch),
    }
}

/// What a `[[rules]]` entry (by its slot, `Rule::slot`) decided for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RuleHit {
    /// An `action = "deny"` rule refused it (403).
    Refused(u16),
    /// An `action = "allow"` rule exempted it.
    Allowed(u16),
    /// A limit rule denied it (429), by the limit of this kind.
    Limited(u16, DenyKind),
}

impl RuleHit {
    pub(super) fn slot(self) -> u16 {
        match self {
            RuleHit::Refused(s) | RuleHit::Allowed(s) | RuleHit::Limited(s, _) => s,
        }
    }
}

/// The limit decision for one request.
pub(super) struct Admission {
    pub(super) tier: usize,
    auth: AuthMethod,
    /// None: the method is not limited for the tier (or the rules exempted it).
    pub(super) decision: Option<Decision>,
    pub(super) enforce: bool,
    /// The client address is over its authentication-failure window: `decision` is that
    /// window's denial, and no key's counters were touched.
    penalized: bool,
    /// The rule that decided, if one did (a denial, a refusal, an exemption).
    pub(super) rule: Option<RuleHit>,
    /// Limit rules were charged (and admitted it).
    pub(super) rules_charged: bool,
}

impl Admission {
    /// The decision when it denies the request (and enforcement is on).
    pub(super) fn denial(&self) -> Option<Decision> {
        self.decision.filter(|d| self.enforce && !d.admitted)
    }

    fn shadow_denied(&self) -> bool {
        !self.enforce && self.decision.is_some_and(|d| !d.admitted)
    }

    fn log_word(&self) -> &'static str {
        match (self.decision, self.rule) {
            (_, Some(RuleHit::Refused(_))) if self.enforce => return "refused",
            (None, Some(RuleHit::Allowed(_))) => return "allowed",
            (None, _) if self.rules_charged => return "admitted",
            _ => {}
        }
        match self.decision {
            None => "unlimited",
            Some(d) if d.admitted => "admitted",
            Some(_) if self.enforce => "denied",
            Some(_) => "shadow_denied",
        }
    }
}

impl<S: AsyncReadRent + AsyncWriteRent> Conn<S> {
    /// Reads what the parsed head says into a [`ReqInfo`]; counts the request, sets its id,
    /// path and access-log fields.
    pub(super) fn begin(&mut self, snap: &Snapshot, served: u64) -> ReqInfo {
        let max_req = snap.cfg.http.max_requests_per_connection;
        self.client_idle = snap.cfg.http.client_idle_timeout;
        self.sent_continue = false;
        self.auth_check = false;
        self.refund = None;
        let h = &self.cbuf[self.cstart..self.cstart + self.head.head_len];
        let method = self.head.method(h);
        let parsed = Method::from_bytes(method);
        let mi = method_index(parsed);
        self.w.stats.requests[mi].inc();
        self.resource.clear();
        self.resource.extend_from_slice(self.head.path(h));
        if self.logging {
            self.rec.method.extend_from_slice(method);
            self.rec.target.extend_from_slice(self.head.target(h));
            self.rec.request_length = match self.head.framing {
                BodyFraming::Length(n) => Some(n),
                _ => None,
            };
        }
        let framing = self.head.framing;
        let http10 = self.head.minor_version == 0;
        let info = ReqInfo {
            hl: self.head.head_len,
            framing,
            expect: self.head.expect_continue && !http10 && framing.has_body(),
            keep_alive: self.head.keep_alive && !(max_req != 0 && served >= max_req),
            http10,
            is_head: method == b"HEAD",
            method: parsed,
            mi,
        };
        self.take_request_id();
        info
    }

    /// The client's own `X-Request-ID` when it is a sane token, else a generated one.
    fn take_request_id(&mut self) {
        let h = &self.cbuf[self.cstart..self.cstart + self.head.head_len];
        let theirs = self.head.x_request_id.clone().map(|r| &h[r]).filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.iter().all(|b| (0x21..=0x7e).contains(b))
        });
        match theirs.and_then(|v| std::str::from_utf8(v).ok()) {
            Some(v) => {
                self.rid.clear();
                self.rid.push_str(v);
            }
            None => self.w.next_request_id(&mut self.rid),
        }
        self.extra.clear();
        self.extra.push("X-Request-ID", &self.rid);
    }

    /// A request that cannot be proxied as it is, answered before the limiter sees it (so it
    /// is not charged): a hop-by-hop field named in SigV4's `SignedHeaders` (it would be
    /// dropped on the way, breaking the signature).
    pub(super) async fn refuse_unproxiable(&mut self, req: &ReqInfo) -> Option<Result<bool, Fail>> {
        if !self.head.headers.iter().any(|f| f.hop_by_hop) {
            return None; // the common case: nothing hop-by-hop, nothing to look up
        }
        let h = &self.cbuf[self.cstart..self.cstart + req.hl];
        let signed = self
            .head
            .header(h, "authorization")
            .and_then(sigv4_signed_headers)?;
        let field = signed_hop_by_hop(h, &self.head, signed)?;
        let message = format!(
            "The hop-by-hop header {} cannot be signed: it is not forwarded",
            String::from_utf8_lossy(field)
        );
        let answer = Answer {
            status: 400,
            code: "InvalidRequest",
            message: &message,
            api_key: false,
            close: true,
            head_only: req.is_head,
        };
        Some(self.write_s3_error(answer).await.map(|()| false))
    }

    /// Identifies the key and its tier, and asks the key's owner core for a decision when
    /// the method is limited for the tier — unless the client address is over its
    /// authentication-failure window. Err: the request must be refused before the limiter
    /// (see [`Refusal`]).
    pub(super) async fn admit(
        &mut self,
        snap: &Snapshot,
        req: &ReqInfo,
    ) -> Result<Admission, Refusal> {
        let lim = &snap.cfg.limits;
        let (tier, auth, penalty) = self.identify(snap)?;
        let t = &lim.tiers[tier];
        let limited = req.method.is_some_and(|m| t.methods.contains(m));
        let mut adm = Admission {
            tier,
            auth,
            decision: penalty,
            enforce: lim.enforce && t.enforce,
            penalized: penalty.is_some(),
            rule: None,
            rules_charged: false,
        };
        if penalty.is_none() {
            if !snap.cfg.rules.is_empty() {
                self.admit_rules(snap, req, &mut adm, limited).await;
            } else if limited {
                adm.decision =
                    Some(limiter::check(&self.w, snap, &self.subject, tier as u16).await);
            }
            if adm.decision.is_none() && !adm.rules_charged {
                self.w.stats.unlimited[req.mi].inc();
            }
        }
        self.auth_check = lim.refund_on_auth_failure && penalty.is_none();
        self.refund = adm
            .decision
            .and_then(|d| d.token)
            .filter(|_| self.auth_check);
        if penalty.is_some() {
            self.w.stats.penalty_denials.inc();
        }
        self.count_decision(req, &adm);
        Ok(adm)
    }

    /// Answers a request refused before the limiter; a bad signature also counts as a
    /// failure against the client address. The connection stays open when no body follows.
    pub(super) async fn refuse(&mut self, req: &ReqInfo, why: Refusal) -> Result<bool, Fail> {
        let (status, code, message) = match why {
            Refusal::TwoKeys(what) => {
                log::debug!("refused a request with more than one key: {what}");
                (400, "InvalidArgument", "Only one auth mechanism allowed")
            }
            Refusal::KeyMismatch => (
                400,
                "InvalidArgument",
                "The signed key is not the request's key",
            ),
            Refusal::Signature(e) => {
                self.w.stats.signature_failures.inc();
                let v6_prefix = self.w.snapshot().cfg.limits.ipv6_prefix;
                limiter::add_penalty(&self.w, self.client, v6_prefix);
                (e.status(), e.code(), e.message())
            }
        };
        if status == 400 {
            self.w.stats.client_errors_400.inc();
        }
        let keep = !req.framing.has_body() && req.keep_alive;
        let answer = Answer {
            status,
            code,
            message,
            api_key: false,
            close: !keep,
            head_only: req.is_head,
        };
        self.write_s3_error(answer).await?;
        if keep {
            self.cstart += req.hl;
        }
        Ok(keep)
    }

    /// Finds the key (kept in `self.key`), the client address (`self.client`), whether that
    /// address is over its failure window (then nothing else is checked), the signature
    /// (with `[limits.verify]`) and the subject the request is counted under.
    fn identify(
        &mut self,
        snap: &Snapshot,
    ) -> Result<(usize, AuthMethod, Option<Decision>), Refusal> {
        let lim = &snap.cfg.limits;
        let h = &self.cbuf[self.cstart..self.cstart + self.head.head_len];
        let mut scratch = [0u8; 256];
        let mut id = identify(
            self.head.target(h),
            self.head.headers(h),
            lim.max_key_len,
            &mut scratch,
        );
        self.w.stats.auth_methods[id.method as usize].inc();
        if id.malformed {
            self.w.stats.malformed_keys.inc();
        }
        let forwarded = self
            .head
            .headers
            .iter()
            .filter(|f| f.is(h, "x-forwarded-for"))
            .map(|f| f.value(h));
        self.client = client_ip(&snap.cfg.http, self.peer.ip(), forwarded);
        if let Some(what) = id.conflict {
            return Err(Refusal::TwoKeys(what));
        }
        let penalty = limiter::check_penalty(&self.w, self.client, lim.ipv6_prefix);
        if let (Some(v), None) = (&lim.verify, penalty) {
            let parts = RequestParts::from_head(h, &self.head);
            if !verified(&self.w, v, &parts, &id)? {
                // Not an S3 signature (X-API-Key, anonymous): nothing proves the key, so the
                // request counts as anonymous, per client address.
                id.key = None;
                id.method = AuthMethod::Anonymous;
            }
        }
        self.key.clear();
        if let Some(k) = id.key {
            self.key.extend_from_slice(k);
        }
        let tgt = limiter::target(lim, &id, self.client);
        self.subject.clear();
        self.subject.extend_from_slice(tgt.subject.as_bytes());
        Ok((tgt.tier, id.method, penalty))
    }

    fn count_decision(&mut self, req: &ReqInfo, adm: &Admission) {
        // Kept also when not logging: `Worker::record_request` reads them (three stores).
        self.rec.tier = Some(adm.tier as u16);
        self.rec.auth = adm.auth.as_str();
        self.rec.limit = adm.log_word();
        self.rec.rule = adm.rule.map(|h| usize::from(h.slot()));
        if let Some(hit) = adm.rule {
            let allowed = matches!(hit, RuleHit::Allowed(_));
            self.w.stats.count_rule(hit.slot(), allowed, adm.enforce);
            if !allowed {
                return; // a rule's denial is not the tier's
            }
        }
        let Some(d) = adm.decision else { return };
        let tm = &self.w.stats.tiers[adm.tier.min(crate::stats::MAX_TIERS - 1)][req.mi];
        if d.admitted {
            tm.admitted.inc();
        } else if adm.enforce {
            tm.denied.inc();
        } else {
            tm.shadow_denied.inc();
        }
    }

    /// Answers a denied request with SlowDown (counters untouched). A body that follows is
    /// drained (`limits.expect_denied = "drain"`, up to its cap) or the connection closes;
    /// a client waiting for `100 Continue` has sent no body, so that connection closes.
    pub(super) async fn deny(
        &mut self,
        snap: &Snapshot,
        req: &ReqInfo,
        adm: &Admission,
        d: &Decision,
    ) -> Result<bool, Fail> {
        let lim = &snap.cfg.limits;
        let (status, code, message) = match adm.rule {
            Some(hit) => self.rule_denial(snap, hit),
            None if adm.penalized => (
                lim.deny_status,
                "SlowDown",
                "Too many failed authentications from this address".into(),
            ),
            None => {
                self.limit_headers(snap, adm, d, false);
                let m = &snap.deny_messages[adm.tier][usize::from(d.burst_binds)];
                (lim.deny_status, "SlowDown", m.as_str().into())
            }
        };
        if !matches!(adm.rule, Some(RuleHit::Refused(_))) {
            retry_headers(&mut self.extra, d);
        }
        let body_pending = req.framing.has_body();
        let buffered = self.cbuf.len() - self.cstart - req.hl;
        let drain_cap = match lim.expect_denied {
            ExpectDenied::Close => None,
            ExpectDenied::Drain(cap) => Some(cap),
        };
        let close = !req.keep_alive
            || (body_pending && (drain_cap.is_none() || (req.expect && buffered == 0)));
        let answer = Answer {
            status,
            code,
            message: &message,
            api_key: true,
            close,
            head_only: req.is_head,
        };
        self.write_s3_error(answer).await?;
        if close {
            return Ok(false);
        }
        self.cstart += req.hl;
        if !body_pending {
            return Ok(true);
        }
        self.discard_body(req.framing, drain_cap.unwrap_or(0)).await
    }

    /// Rate-limit headers on an admitted response (if configured), always on a shadow denial.
    pub(super) fn add_limit_headers(&mut self, snap: &Snapshot, adm: &Admission) {
        let Some(d) = adm.decision.filter(|_| !adm.penalized) else {
            return;
        };
        let shadow = adm.shadow_denied();
        if snap.cfg.limits.headers.on_allowed || shadow {
            self.limit_headers(snap, adm, &d, shadow);
        }
    }

    fn limit_headers(&mut self, snap: &Snapshot, adm: &Admission, d: &Decision, shadow: bool) {
        let lim = &snap.cfg.limits;
        let key = std::str::from_utf8(&self.key)
            .ok()
            .filter(|k| !k.is_empty());
        rate_limit_headers(
            &mut self.extra,
            &lim.headers,
            &lim.tiers[adm.tier],
            d,
            key,
            adm.auth.as_str(),
            shadow,
        );
    }

    /// Reads and throws away a request body (denied request in drain mode), up to `cap`.
    /// Ok(true) = the body ended and the connection can carry the next request.
    async fn discard_body(&mut self, framing: BodyFraming, cap: u64) -> Result<bool, Fail> {
        if let BodyFraming::Length(n) = framing {
            if n > cap {
                return Ok(false);
            }
        }
        let mut body = BodyProgress::new(framing);
        let mut discarded: u64 = 0;
        loop {
            let take = body
                .feed(&self.cbuf[self.cstart..])
                .map_err(|_| Fail::BadBody)?;
            self.cstart += take;
            discarded += take as u64;
            if body.is_done() {
                return Ok(true);
            }
            if discarded > cap {
                return Ok(false);
            }
            self.cbuf.clear();
            self.cstart = 0;
            let deadline = Instant::now() + self.client_idle;
            let n = read_append(&mut self.io, &mut self.cbuf, BufPool::SIZE, deadline)
                .await
                .map_err(|_| Fail::Client)?;
            self.w.stats.bytes_from_client.add(n as u64);
        }
    }
}
