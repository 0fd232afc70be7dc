//! What a job's build function hands back per worker: a sink's handle, the records
//! a `collect` gathered, or nothing.

use std::cell::RefCell;
use std::rc::Rc;

use crate::task::TaskRef;

/// The end of a stream written by a sink (e.g. [`DataStream::write_text_files`](super::DataStream::write_text_files)).
pub struct DataSink {
    pub(crate) task: Option<TaskRef>,
}

impl DataSink {
    /// Sets the sink's uid: its pending transactions are stored under this name
    /// (see [`DataStream::uid`](super::DataStream::uid)).
    pub fn uid(self, uid: impl Into<String>) -> Self {
        if let Some(t) = &self.task {
            t.set_uid(uid.into());
        }
        self
    }
}

impl JobResult for DataSink {
    type Output = ();
    fn finish(self) {}
}

/// Records of one worker gathered by [`DataStream::collect`](super::DataStream::collect).
pub struct Collected<T>(pub(crate) Rc<RefCell<Vec<T>>>);

/// What a job's build function hands back per worker.
pub trait JobResult {
    /// What [`crate::execute`] returns for the worker.
    type Output: Send + 'static;
    /// Extracts it once the job is done.
    fn finish(self) -> Self::Output;
}

impl<T: Send + 'static> JobResult for Collected<T> {
    type Output = Vec<T>;
    fn finish(self) -> Vec<T> {
        std::mem::take(&mut *self.0.borrow_mut())
    }
}

impl JobResult for () {
    type Output = ();
    fn finish(self) {}
}

impl<A: JobResult, B: JobResult> JobResult for (A, B) {
    type Output = (A::Output, B::Output);
    fn finish(self) -> Self::Output {
        (self.0.finish(), self.1.finish())
    }
}
