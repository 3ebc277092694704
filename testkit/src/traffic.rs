//! Traffic from one testpmd pod to another through vrouterd, accounted for packet by packet:
//! what the sending pod sent, what vrouterd took from it and passed on, and what the receiving
//! pod got.

use std::time::Duration;

use control_api::api::VifCounters;

use crate::testpmd::{PodTotals, TestpmdPod};
use crate::vrouterd::Vrouterd;

/// How long a pod may take to answer at its prompt, or to stop.
const POD_ANSWER: Duration = Duration::from_secs(20);

/// The counts of one sender → receiver flow, taken once both pods stopped.
#[derive(Debug, Clone, Copy)]
pub struct Tally {
    /// What the sending pod sent, by its own count.
    pub sent: PodTotals,
    /// What the receiving pod got, by its own count.
    pub got: PodTotals,
    /// The sender's vif: what vrouterd took from the pod.
    pub from: VifCounters,
    /// The receiver's vif: what vrouterd sent the pod (or dropped on the way to it).
    pub to: VifCounters,
}

impl Tally {
    /// Every packet accounted for: vrouterd took all the sender sent, the receiver got all
    /// vrouterd sent it, and every packet vrouterd took was sent on or counted dropped.
    #[track_caller]
    pub fn assert_exact(&self) {
        let Tally {
            sent,
            got,
            from,
            to,
        } = self;
        assert_eq!(
            from.rx_packets, sent.tx_packets,
            "vrouterd received what the sender sent: {from:?} {sent:?}"
        );
        assert_eq!(
            to.tx_packets, got.rx_packets,
            "the receiver received what vrouterd sent it: {to:?} {got:?}"
        );
        assert_eq!(
            from.rx_packets,
            to.tx_packets + to.drops,
            "every packet routed to the receiver, sent or counted dropped: {from:?} {to:?}"
        );
    }
}

/// Stops `sender` (on vif `from`) and, once everything it sent has crossed vrouterd and
/// `receiver` (on vif `to`) has taken all vrouterd sent it, stops the receiver too; returns
/// the counts of all four.
pub fn finish(
    vr: &Vrouterd,
    sender: &mut TestpmdPod,
    from: &str,
    receiver: &mut TestpmdPod,
    to: &str,
) -> Tally {
    let sent = sender.finish(POD_ANSWER).expect("sender totals");
    let counters = |name| vr.vif(name).status.counters;
    let (_, sent_on) = vr.wait_until(
        "vrouterd passes on all the sender sent",
        || (counters(from), counters(to)),
        |(a, b)| a.rx_packets >= sent.tx_packets && b.tx_packets + b.drops >= a.rx_packets,
    );
    // What vrouterd placed in the receiver's ring may not have been taken yet: stopping the
    // pod now would leave it uncounted.
    vr.wait_until(
        "the receiver takes all vrouterd sent it",
        || receiver.totals(POD_ANSWER),
        |t| t.is_some_and(|t| t.rx_packets >= sent_on.tx_packets),
    );
    let got = receiver.finish(POD_ANSWER).expect("receiver totals");
    Tally {
        sent,
        got,
        from: counters(from),
        to: counters(to),
    }
}
