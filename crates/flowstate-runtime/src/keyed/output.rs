//! What a keyed operator emits and where it goes: the user code's pending output
//! (main records and side outputs apart) and the operator's two outputs, one for main
//! records and one for side outputs, each with its capability.
//!
//! Two outputs of one operator, not one stream of tagged records split by a second
//! operator: every main record would otherwise be built as a tagged record, handed
//! through one more operator's input and session, and copied once more (about a tenth
//! of the heap `value` job with 1,000 keys, in `perf`).

use timely::Container;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{
    InputHandleCore, OperatorInfo, OutputBuilder, OutputBuilderSession,
};
use timely::dataflow::{Stream, StreamVec};
use timely::progress::frontier::MutableAntichain;

use super::OutputTag;
use crate::RuntimeError;
use crate::metrics::OperatorMetrics;
use crate::stream::{Data, SideStream};
use crate::time::{Time, time_at};

/// Output a keyed operator's user code emitted and the operator has not handed on
/// yet: main records and side outputs apart. A main record is kept as `(timestamp,
/// value)`, written straight from registers; built as a tagged enum (56 bytes for a
/// `u64`) it went through the stack, and that copy's load waited for every earlier
/// store, a state write's cache miss included (most of `process_element`'s samples
/// in the heap `value` job, which gained 4%). The two go to different outputs (see
/// [`crate::DataStream::side_output`]), so only the order within each matters, and
/// it is kept.
pub(crate) struct Outbox<OUT> {
    main: Vec<(i64, OUT)>,
    side: Vec<(i64, (String, Vec<u8>))>,
}

impl<OUT> Outbox<OUT> {
    pub(crate) fn new() -> Self {
        Outbox {
            main: Vec::new(),
            side: Vec::new(),
        }
    }

    /// Records waiting, main and side.
    pub(crate) fn len(&self) -> usize {
        self.main.len() + self.side.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.main.is_empty() && self.side.is_empty()
    }
}

/// Where a keyed operator's user code emits to.
pub(crate) struct Emitter<'a, OUT> {
    pub(crate) out: &'a mut Outbox<OUT>,
}

impl<OUT> Emitter<'_, OUT> {
    pub(crate) fn main(&mut self, ts: i64, value: OUT) {
        self.out.main.push((ts, value));
    }
    pub(crate) fn side<T: Data>(
        &mut self,
        tag: &OutputTag<T>,
        ts: i64,
        value: &T,
    ) -> Result<(), RuntimeError> {
        let bytes = tag.encode(value)?;
        self.out.side.push((ts, (tag.name().to_string(), bytes)));
        Ok(())
    }
}

/// The main output of a keyed operator and its side outputs.
pub(crate) type KeyedStreams<'scope, OUT> =
    (StreamVec<'scope, Time, (i64, OUT)>, SideStream<'scope>);

/// A keyed operator with one input (timely's `unary_frontier`, with the two outputs of
/// [`KeyedOutputs`]): `constructor` gets the operator's capabilities and its info and
/// returns the logic run at each activation.
pub(crate) fn keyed_unary<'scope, C, P, OUT, B, L>(
    input: Stream<'scope, Time, C>,
    pact: P,
    name: &str,
    constructor: B,
) -> KeyedStreams<'scope, OUT>
where
    C: Container,
    P: ParallelizationContract<Time, C>,
    OUT: 'static,
    B: FnOnce(Option<KeyedCaps>, OperatorInfo) -> L,
    L: FnMut(
            (
                &mut InputHandleCore<Time, C, P::Puller>,
                &MutableAntichain<Time>,
            ),
            &mut KeyedOutput<'_, OUT>,
        ) + 'static,
{
    let mut builder = OperatorBuilder::new(name.to_owned(), input.scope());
    let info = builder.operator_info();
    let mut input = builder.new_input(input, pact);
    let (mut outputs, main, side) = KeyedOutputs::new(&mut builder);
    builder.build(move |caps| {
        let mut logic = constructor(KeyedCaps::new(caps), info);
        move |frontiers| {
            let mut output = outputs.activate();
            logic((&mut input, &frontiers[0]), &mut output);
        }
    });
    (main, side)
}

/// A keyed operator with two inputs (timely's `binary_frontier`, with the two outputs
/// of [`KeyedOutputs`]).
#[allow(clippy::type_complexity)]
pub(crate) fn keyed_binary<'scope, C1, C2, P1, P2, OUT, B, L>(
    input1: Stream<'scope, Time, C1>,
    input2: Stream<'scope, Time, C2>,
    pact1: P1,
    pact2: P2,
    name: &str,
    constructor: B,
) -> KeyedStreams<'scope, OUT>
where
    C1: Container,
    C2: Container,
    P1: ParallelizationContract<Time, C1>,
    P2: ParallelizationContract<Time, C2>,
    OUT: 'static,
    B: FnOnce(Option<KeyedCaps>, OperatorInfo) -> L,
    L: FnMut(
            (
                &mut InputHandleCore<Time, C1, P1::Puller>,
                &MutableAntichain<Time>,
            ),
            (
                &mut InputHandleCore<Time, C2, P2::Puller>,
                &MutableAntichain<Time>,
            ),
            &mut KeyedOutput<'_, OUT>,
        ) + 'static,
{
    let mut builder = OperatorBuilder::new(name.to_owned(), input1.scope());
    let info = builder.operator_info();
    let mut input1 = builder.new_input(input1, pact1);
    let mut input2 = builder.new_input(input2, pact2);
    let (mut outputs, main, side) = KeyedOutputs::new(&mut builder);
    builder.build(move |caps| {
        let mut logic = constructor(KeyedCaps::new(caps), info);
        move |frontiers| {
            let mut output = outputs.activate();
            logic(
                (&mut input1, &frontiers[0]),
                (&mut input2, &frontiers[1]),
                &mut output,
            );
        }
    });
    (main, side)
}

type MainBuilder<OUT> = CapacityContainerBuilder<Vec<(i64, OUT)>>;
type SideBuilder = CapacityContainerBuilder<Vec<(i64, (String, Vec<u8>))>>;

/// A keyed operator's two outputs, between activations.
struct KeyedOutputs<OUT: 'static> {
    main: OutputBuilder<Time, MainBuilder<OUT>>,
    side: OutputBuilder<Time, SideBuilder>,
}

impl<OUT: 'static> KeyedOutputs<OUT> {
    /// Adds the main output (port 0) and the side output (port 1) to `builder`, after
    /// its inputs: both depend on every input. Returns them with their streams.
    fn new<'scope>(
        builder: &mut OperatorBuilder<'scope, Time>,
    ) -> (
        Self,
        StreamVec<'scope, Time, (i64, OUT)>,
        SideStream<'scope>,
    ) {
        let (main, main_stream) = builder.new_output();
        let (side, side_stream) = builder.new_output();
        let outputs = KeyedOutputs {
            main: OutputBuilder::from(main),
            side: OutputBuilder::from(side),
        };
        (outputs, main_stream, side_stream)
    }

    /// Both outputs, for one activation.
    fn activate(&mut self) -> KeyedOutput<'_, OUT> {
        KeyedOutput {
            main: self.main.activate(),
            side: self.side.activate(),
        }
    }
}

/// A keyed operator's two outputs, active for one activation.
pub(crate) struct KeyedOutput<'a, OUT: 'static> {
    main: OutputBuilderSession<'a, Time, MainBuilder<OUT>>,
    side: OutputBuilderSession<'a, Time, SideBuilder>,
}

impl<OUT: 'static> KeyedOutput<'_, OUT> {
    /// Hands every record waiting in `out` on at `at` (not before `caps`' time).
    pub(crate) fn give(&mut self, caps: &KeyedCaps, at: &Time, out: &mut Outbox<OUT>) {
        if !out.main.is_empty() {
            self.main
                .session(&caps.main.delayed(at))
                .give_iterator(out.main.drain(..));
        }
        if !out.side.is_empty() {
            self.side
                .session(&caps.side.delayed(at))
                .give_iterator(out.side.drain(..));
        }
    }
}

/// The capabilities a keyed operator holds, one per output, always at the same time:
/// whatever it may still send on one it may send on the other.
pub(crate) struct KeyedCaps {
    main: Capability<Time>,
    side: Capability<Time>,
}

impl KeyedCaps {
    /// The capabilities an operator built with [`KeyedOutputs::new`] starts with, one
    /// per output in port order; `None` if they are not two.
    fn new(caps: Vec<Capability<Time>>) -> Option<Self> {
        let [main, side]: [Capability<Time>; 2] = caps.try_into().ok()?;
        Some(KeyedCaps { main, side })
    }

    /// The time both are at.
    pub(crate) fn time(&self) -> &Time {
        self.main.time()
    }

    /// Moves both to `to`, which must not be earlier.
    pub(crate) fn downgrade(&mut self, to: &Time) {
        self.main.downgrade(to);
        self.side.downgrade(to);
    }
}

/// Hands pending output on (to the operator's outputs, in the given epoch or, if the
/// operator's capabilities are already later, at theirs): firing many timers at once
/// flushes every [`FLUSH_EVERY`] records instead of buffering all their output.
pub(crate) type Flush<'a, OUT> = &'a mut dyn FnMut(&mut Outbox<OUT>, u64);

/// The [`Flush`] of a keyed operator's outputs: counts the records in `metrics`, then
/// gives them at the epoch it is called with (or the capabilities', if later) and the
/// inner time of `emit_at`.
pub(crate) fn flush_to<'a, OUT: 'static>(
    metrics: Option<OperatorMetrics>,
    caps: &'a KeyedCaps,
    emit_at: Time,
    output: &'a mut KeyedOutput<'_, OUT>,
) -> impl FnMut(&mut Outbox<OUT>, u64) + 'a {
    move |o, epoch| {
        if let Some(m) = &metrics {
            m.output(o.len());
        }
        let at = time_at(epoch.max(caps.time().outer), emit_at.inner);
        output.give(caps, &at, o);
    }
}

/// Output records a keyed operator buffers at most while firing or running records.
pub(crate) const FLUSH_EVERY: usize = 1024;

#[cfg(test)]
mod tests {
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::{Input, Probe};

    use super::*;
    use crate::time::time;

    /// Both outputs follow the operator's capabilities: once it moves them, neither
    /// output holds its readers back (a side output left at an earlier time would stall
    /// whatever reads it, a sink's checkpoints included), and both close when it drops
    /// them.
    #[test]
    fn both_outputs_advance_and_close_with_the_capabilities() {
        timely::execute_directly(|worker| {
            let (mut input, main, side) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<u64>>();
                let (main, side) =
                    keyed_unary::<_, _, u64, _, _>(stream, Pipeline, "Test", |caps, _| {
                        let mut caps = caps;
                        move |(input, frontier), _output| {
                            input.for_each(|_, data| data.clear());
                            match frontier.frontier().first() {
                                Some(t) => {
                                    if let Some(c) = caps.as_mut()
                                        && c.time() != t
                                    {
                                        c.downgrade(t);
                                    }
                                }
                                None => caps = None,
                            }
                        }
                    });
                (input, main.probe().0, side.probe().0)
            });
            let later = time(3, 2);
            input.advance_to(later);
            for _ in 0..100 {
                if !main.less_than(&later) && !side.less_than(&later) {
                    break;
                }
                worker.step();
            }
            assert!(!main.less_than(&later), "the main output moved on");
            assert!(!side.less_than(&later), "the side output moved on with it");
            drop(input);
            for _ in 0..100 {
                if main.done() && side.done() {
                    break;
                }
                worker.step();
            }
            assert!(main.done() && side.done(), "both closed");
        });
    }
}
