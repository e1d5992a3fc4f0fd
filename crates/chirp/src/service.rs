//! `chirp serve` under a service manager: systemd's notification protocol (`Type=notify`,
//! `sd_notify(3)`) over the datagram socket named by `$NOTIFY_SOCKET`. Without that variable
//! (not started by systemd, or not as `Type=notify`) nothing is sent.

/// What the server tells the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Serving: the database is open, the socket bound, the transport running (`READY=1`);
    /// also after a reload.
    Ready,
    /// Re-reading the config file (`RELOADING=1`, with the time as `Type=notify-reload`
    /// wants it); `Ready` follows.
    Reloading,
    /// Shutting down gracefully (`STOPPING=1`).
    Stopping,
}

/// Tells the manager, if there is one. One that cannot be told is logged, not fatal.
#[cfg(unix)]
pub(crate) fn notify(state: State) {
    use sd_notify::NotifyState;
    let mut msg = match state {
        State::Ready => vec![NotifyState::Ready, NotifyState::Status("serving")],
        State::Reloading => vec![
            NotifyState::Reloading,
            NotifyState::Status("reloading the config file"),
        ],
        State::Stopping => vec![NotifyState::Stopping, NotifyState::Status("stopping")],
    };
    if state == State::Reloading
        && let Ok(t) = NotifyState::monotonic_usec_now()
    {
        msg.push(t);
    }
    // `false`: the variable stays, for the notifications that follow.
    if let Err(e) = sd_notify::notify(false, &msg) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// No service manager to tell outside Unix.
#[cfg(not(unix))]
pub(crate) fn notify(_: State) {}
