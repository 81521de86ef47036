//! Flow events: denied flows, and allowed flows a staged policy would deny (or the reverse),
//! sent to the `EVENTS` ring buffer. At most `EVENTS_PER_WINDOW` per CPU per
//! `EVENT_WINDOW_NS`; an event over the limit, or one the full ring cannot take, is counted
//! as `REASON_EVENT_DROPPED` and lost.

use enforcer_common::{
    ACTION_DENY, ANY, EVENT_WINDOW_NS, EVENTS_PER_WINDOW, FlowEvent, REASON_EVENT_DROPPED,
    VerdictValue,
};

use crate::{
    maps::{EVENT_LIMIT, EVENTS, count},
    policy::Subject,
};

/// Reports a judged flow. `verdict` is `None` when the tables had no verdict for it: the
/// event then says `ACTION_DENY` with rule ids `ANY`.
#[inline(always)]
pub(crate) fn report(
    ifindex: u32,
    hook_dir: u8,
    subject: &Subject,
    verdict: Option<&VerdictValue>,
    now: u64,
) {
    if !take_token(now) {
        count(REASON_EVENT_DROPPED, hook_dir);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        count(REASON_EVENT_DROPPED, hook_dir);
        return;
    };
    let (action, staged_action, rule_id, staged_rule_id) = match verdict {
        Some(v) => (v.action, v.staged_action, v.rule_id, v.staged_rule_id),
        None => (ACTION_DENY, ACTION_DENY, ANY, ANY),
    };
    entry.write(FlowEvent {
        timestamp_ns: now,
        ifindex,
        rule_id,
        staged_rule_id,
        direction: subject.dir,
        family: subject.family,
        protocol: subject.protocol,
        action,
        staged_action,
        _pad: [0; 3],
        src_port: subject.src_port,
        dst_port: subject.policy_port,
        src: subject.src,
        dst: subject.dst,
    });
    entry.submit(0);
}

/// Per-CPU fixed-window limiter.
#[inline(always)]
fn take_token(now: u64) -> bool {
    let Some(limit) = EVENT_LIMIT.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot of a per-CPU array; a tc program is not re-entered on one CPU.
    unsafe {
        if now.wrapping_sub((*limit).window_start_ns) >= EVENT_WINDOW_NS {
            (*limit).window_start_ns = now;
            (*limit).sent = 0;
        }
        if (*limit).sent >= EVENTS_PER_WINDOW {
            return false;
        }
        (*limit).sent += 1;
    }
    true
}
