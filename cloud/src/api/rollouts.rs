//! The latest revision's rollout: `GET /v1/rollout` shows it, `POST /v1/rollout/pause`,
//! `/resume` and `/abort` steer it. Each change is stored before it is served.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use edgefn_schema::api::{ErrorCode, RolloutState, RolloutStatus};

use crate::error::{ApiError, blocking};
use crate::registry::Caller;
use crate::rollout::RolloutRecord;
use crate::state::AppState;
use edgefn_os::time::now_ms;

/// The rollout of the latest revision, or 404 when it had none.
pub(crate) fn current(state: &AppState) -> Result<RolloutStatus, ApiError> {
    let view = state.view();
    let record = state
        .rollout_record()
        .filter(|r| r.revision == view.revision)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "revision {} has no rollout: it reached every device at once (add `rollout:` to the manifest to roll out in stages)",
                view.revision
            ))
        })?;
    Ok(state.with_statuses(|reports| record.status(&view, reports)))
}

pub(super) async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<RolloutStatus>, ApiError> {
    caller.require_admin()?;
    Ok(Json(current(&state)?))
}

/// What an operator asks of a rollout.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action {
    Pause,
    Resume,
    Abort,
}

/// Applies `action` to the latest revision's rollout, stores and serves the result.
pub(crate) async fn steer(
    state: &Arc<AppState>,
    action: Action,
) -> Result<RolloutStatus, ApiError> {
    let _guard = state.commit.lock().await;
    let view = state.view();
    let mut r: RolloutRecord = state
        .rollout_record()
        .filter(|r| r.revision == view.revision)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::RolloutNotRunning,
                format!("revision {} has no rollout to steer", view.revision),
            )
        })?;
    let now = now_ms();
    let refuse = |r: &RolloutRecord, what: &str| {
        ApiError::new(
            ErrorCode::RolloutNotRunning,
            format!(
                "the rollout of revision {} is {}, so it cannot be {what}{}",
                r.revision,
                r.state.as_str(),
                r.reason
                    .as_deref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            ),
        )
    };
    match action {
        Action::Pause => {
            if r.state != RolloutState::Running {
                return Err(refuse(&r, "paused"));
            }
            r.state = RolloutState::Paused;
            r.reason = Some("paused by an operator".into());
            r.healthy_since_ms = None;
        }
        Action::Resume => {
            if r.state != RolloutState::Paused {
                return Err(refuse(&r, "resumed"));
            }
            // The stage's clocks start again: its devices get the whole deadline and bake.
            r.state = RolloutState::Running;
            r.reason = None;
            r.stage_started_ms = now;
            r.healthy_since_ms = None;
        }
        Action::Abort => {
            if r.state.is_final() {
                return Err(refuse(&r, "aborted"));
            }
            r.end(
                RolloutState::Aborted,
                format!(
                    "aborted by an operator at stage {} of {}; every device is back on revision {}",
                    r.stage + 1,
                    r.stages.len(),
                    r.baseline
                ),
                now,
            );
        }
    }
    let store = state.store.clone();
    let bytes = serde_json::to_vec(&r).map_err(ApiError::internal)?;
    blocking(move || Ok(store.put_rollout(&bytes)?)).await?;
    tracing::info!(
        revision = r.revision,
        state = r.state.as_str(),
        "rollout {action:?}"
    );
    state.update_rollout(r.clone());
    let view = state.view();
    Ok(state.with_statuses(|reports| r.status(&view, reports)))
}

pub(super) async fn pause(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<RolloutStatus>, ApiError> {
    caller.require_admin()?;
    Ok(Json(steer(&state, Action::Pause).await?))
}

pub(super) async fn resume(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<RolloutStatus>, ApiError> {
    caller.require_admin()?;
    Ok(Json(steer(&state, Action::Resume).await?))
}

pub(super) async fn abort(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<RolloutStatus>, ApiError> {
    caller.require_admin()?;
    Ok(Json(steer(&state, Action::Abort).await?))
}

/// The driver: every [`crate::rollout::TICK`], one step of the running rollout; a change is
/// stored, then served. Ends when `stop` turns true.
pub(crate) async fn drive(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(crate::rollout::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Several processes may share the store: only the one holding the driver's role steps the
    // record; the others serve what it writes (the store's change notifications).
    let driver = state.store.rollout_driver(stop.clone());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if !driver.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        let Some(record) = state.rollout_record() else {
            continue;
        };
        if record.state != RolloutState::Running {
            continue;
        }
        let view = state.view();
        if view.revision != record.revision {
            continue;
        }
        let next =
            state.with_statuses(|reports| crate::rollout::step(&record, &view, reports, now_ms()));
        if next == record {
            continue;
        }
        let _guard = state.commit.lock().await;
        // A commit or an operator may have changed it meanwhile: the next tick sees theirs.
        if state.rollout_record().as_ref() != Some(&record) {
            continue;
        }
        let store = state.store.clone();
        let (before, bytes) = match (serde_json::to_vec(&record), serde_json::to_vec(&next)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("could not encode the rollout: {e}");
                continue;
            }
        };
        // Written only over the record it was stepped from: a driver that has just lost its
        // role (or read a stale record) never overwrites another process's step.
        match blocking(move || Ok(store.replace_rollout(&before, &bytes)?)).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!("the rollout was changed by another process; reading it again");
                let st = state.clone();
                if let Err(e) = blocking(move || Ok(st.reload_latest()?)).await {
                    tracing::warn!("could not read the rollout again: {e:?}");
                }
                continue;
            }
            Err(e) => {
                tracing::warn!("could not save the rollout: {e:?}");
                continue;
            }
        }
        if next.stage != record.stage || next.state != record.state {
            tracing::info!(
                revision = next.revision,
                stage = next.stage + 1,
                state = next.state.as_str(),
                reason = next.reason.as_deref().unwrap_or(""),
                "rollout moved"
            );
        }
        state.update_rollout(next);
    }
}
