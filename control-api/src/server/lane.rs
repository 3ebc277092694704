//! Where the server runs controller calls, off the async runtime: one thread for changes and
//! one for reads. A change can wait on the dataplane for seconds (a vif add waits for the vhost
//! core to open the socket); on a shared thread every health probe, metrics scrape and listing
//! would queue behind it. Both threads start with the server and end with it, so no thread
//! comes and goes with the load (each new one would bring its own stack and malloc arena).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use tokio::sync::oneshot;

use crate::controller::Controller;
use crate::error::Error;

type Job = Box<dyn FnOnce(&Controller) + Send>;

enum Message {
    Run(Job),
    /// Finish what is queued before this, then end the thread.
    Stop,
}

/// One thread running controller calls in the order they were queued.
struct Lane {
    jobs: mpsc::Sender<Message>,
}

impl Lane {
    /// The lane's thread, and a receiver that fires when the thread has ended.
    fn start(name: &str, ctrl: Arc<Controller>) -> Result<(Lane, oneshot::Receiver<()>), Error> {
        let (jobs, queue) = mpsc::channel::<Message>();
        let (ended_tx, ended) = oneshot::channel();
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                for message in queue {
                    match message {
                        // In builds that unwind (tests; vrouterd's release build aborts on
                        // panic), a panicking call drops its reply sender: the request gets a
                        // 500 and the lane goes on with the next one. The controller commits
                        // only after every fallible step, so the model stays consistent.
                        Message::Run(job) => {
                            let _ = catch_unwind(AssertUnwindSafe(|| job(&ctrl)));
                        }
                        Message::Stop => break,
                    }
                }
                let _ = ended_tx.send(());
            })
            .map_err(|e| Error::Internal(format!("starting the {name} thread: {e}")))?;
        Ok((Lane { jobs }, ended))
    }

    async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Controller) -> Result<T, Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Message::Run(Box::new(move |c| {
                let _ = reply.send(f(c));
            })))
            .map_err(|_| Error::Internal("the control API is shutting down".into()))?;
        // No answer: the call panicked (the panic message is on stderr), or it was still
        // queued when the server stopped.
        answer.await.map_err(|_| {
            Error::Internal(
                "the control call did not complete (panicked, or the API stopped)".into(),
            )
        })?
    }
}

/// The change lane and the read lane of one server.
pub(crate) struct Lanes {
    change: Lane,
    read: Lane,
}

/// Fires when both lanes' threads have ended (after [`Lanes::stop`]).
pub(crate) struct LanesEnded([oneshot::Receiver<()>; 2]);

impl LanesEnded {
    pub(crate) async fn wait(self) {
        for ended in self.0 {
            let _ = ended.await;
        }
    }
}

impl Lanes {
    pub(crate) fn start(ctrl: &Arc<Controller>) -> Result<(Lanes, LanesEnded), Error> {
        let (change, change_ended) = Lane::start("control-change", Arc::clone(ctrl))?;
        let (read, read_ended) = Lane::start("control-read", Arc::clone(ctrl))?;
        Ok((
            Lanes { change, read },
            LanesEnded([change_ended, read_ended]),
        ))
    }

    /// Run a call that changes configuration (or the flow table): one at a time, in order.
    pub(crate) async fn change<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Controller) -> Result<T, Error> + Send + 'static,
    {
        self.change.run(f).await
    }

    /// Run a call that only reads. It never waits for a change in progress: it sees the state
    /// from before that change or after it, whole.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Controller) -> Result<T, Error> + Send + 'static,
    {
        self.read.run(f).await
    }

    /// Let both threads finish what is queued and end; later calls are refused.
    pub(crate) fn stop(&self) {
        let _ = self.change.jobs.send(Message::Stop);
        let _ = self.read.jobs.send(Message::Stop);
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.stop();
    }
}
