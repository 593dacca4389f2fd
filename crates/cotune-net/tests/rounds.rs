//! Rounds over the network: drops by heartbeat and deadline, stale and refused uploads, a
//! restarted server, and a bounded soak with devices joining and leaving.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use cotune_net::{DeviceClient, DeviceState, NetError, Pull, RoundOutcome, TaskAssignment};

const LIMIT: Duration = Duration::from_secs(30);

async fn connect(server: &cotune_net::NetServer, certs: &Certs, device: usize) -> DeviceClient {
    within(
        "connect",
        LIMIT,
        DeviceClient::connect(client_config(server, certs, device)),
    )
    .await
    .unwrap()
}

async fn task(client: &mut DeviceClient) -> TaskAssignment {
    match within("pull", LIMIT, client.next_task(LIMIT))
        .await
        .unwrap()
    {
        Pull::Task(t) => t,
        other => panic!("expected a task, got {other:?}"),
    }
}

/// Pulls, downloads and uploads `upload` for the task's round.
async fn take_part(client: &mut DeviceClient, upload: Bytes) -> Result<u64, NetError> {
    let t = task(client).await;
    within("download", LIMIT, client.download(&t)).await?;
    within("upload", LIMIT, client.upload(t.round, upload)).await?;
    Ok(t.round)
}

#[tokio::test]
async fn a_silent_device_is_dropped_and_the_round_closes_at_its_deadline_with_the_others() {
    let certs = certs(4);
    let state = state();
    let server = server(&certs, state.clone()).await;
    let mut clients = Vec::new();
    for d in 0..4 {
        clients.push(connect(&server, &certs, d).await);
    }
    let deadline = Duration::from_secs(3);
    let start = Instant::now();
    state
        .open_round(round(1, &[0, 1, 2, 3], payload(1, 1000), deadline, 2))
        .unwrap();
    // Device 3 pulls its task and goes silent (its process is gone).
    let _ = task(&mut clients[3]).await;
    drop(clients.pop());
    // Device 2 keeps its heartbeat but never uploads: dropped at the deadline.
    let _ = task(&mut clients[2]).await;
    for (d, client) in clients.iter_mut().take(2).enumerate() {
        take_part(client, Bytes::from(vec![d as u8; 10]))
            .await
            .unwrap();
    }
    // Device 3 is dropped by its heartbeat before the deadline.
    within("drop", LIMIT, async {
        while state.report(1).unwrap().devices[&3].state != DeviceState::Dropped {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(start.elapsed() < deadline);
    let report = within("round", LIMIT, state.wait_round(1)).await.unwrap();
    assert!(start.elapsed() >= deadline, "closed at the deadline");
    assert_eq!(report.outcome, RoundOutcome::Completed);
    assert_eq!(
        report.uploads.keys().copied().collect::<Vec<_>>(),
        vec![0, 1]
    );
    let three = &report.devices[&3];
    assert_eq!(three.state, DeviceState::Dropped);
    assert!(
        three.dropped.as_deref().unwrap().contains("no heartbeat"),
        "{three:?}"
    );
    let two = &report.devices[&2];
    assert_eq!(two.state, DeviceState::Dropped);
    assert!(
        two.dropped
            .as_deref()
            .unwrap()
            .contains("missed the deadline of round 1"),
        "{two:?}"
    );
    // A dropped device joins the next round: device 2's late upload is refused, its next
    // round's is accepted.
    let err = clients[2]
        .upload(1, Bytes::from_static(b"late"))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Refused { .. }), "{err}");
    state
        .open_round(round(2, &[2], payload(2, 10), deadline, 1))
        .unwrap();
    assert_eq!(
        take_part(&mut clients[2], Bytes::from_static(b"two"))
            .await
            .unwrap(),
        2
    );
    let report = within("round 2", LIMIT, state.wait_round(2)).await.unwrap();
    assert_eq!(report.outcome, RoundOutcome::Completed);
}

#[tokio::test]
async fn a_round_below_its_minimum_fails_clearly_at_the_deadline() {
    let certs = certs(2);
    let state = state();
    let server = server(&certs, state.clone()).await;
    let mut c0 = connect(&server, &certs, 0).await;
    state
        .open_round(round(
            1,
            &[0, 1],
            payload(1, 10),
            Duration::from_millis(1500),
            2,
        ))
        .unwrap();
    take_part(&mut c0, Bytes::from_static(b"x")).await.unwrap();
    let report = within("round", LIMIT, state.wait_round(1)).await.unwrap();
    let RoundOutcome::Failed { reason } = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    assert!(
        reason.contains("1 accepted uploads of 2 participants, fewer than the minimum 2"),
        "{reason}"
    );
    let err = report.into_uploads().unwrap_err().to_string();
    assert!(err.starts_with("round 1 failed: 1 accepted"), "{err}");
}

#[tokio::test]
async fn an_upload_for_a_stale_or_unknown_round_is_refused() {
    let certs = certs(1);
    let state = state();
    let server = server(&certs, state.clone()).await;
    let mut client = connect(&server, &certs, 0).await;
    state
        .open_round(round(1, &[0], payload(1, 10), LIMIT, 1))
        .unwrap();
    take_part(&mut client, Bytes::from_static(b"one"))
        .await
        .unwrap();
    within("round 1", LIMIT, state.wait_round(1)).await.unwrap();
    state
        .open_round(round(2, &[0], payload(2, 10), LIMIT, 1))
        .unwrap();
    let err = client
        .upload(1, Bytes::from_static(b"old"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, NetError::Refused { round: 1, .. }), "{text}");
    // Round 1 holds the accepted "one": the status shows it, a new payload is refused.
    assert!(text.contains("round 1 is closed"), "{text}");
    let err = client
        .upload(9, Bytes::from_static(b"?"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("round 9 is unknown"), "{err}");
    let report = state.report(1).unwrap();
    assert_eq!(report.uploads[&0], Bytes::from_static(b"one"));
}

#[tokio::test]
async fn a_refused_upload_leaves_the_accepted_set_unchanged() {
    let certs = certs(2);
    let validator: cotune_net::Validator = Arc::new(|device, round, bytes: &[u8]| {
        if bytes.starts_with(b"bad") {
            Err(format!(
                "device {device} round {round}: payload starts with 'bad'"
            ))
        } else {
            Ok(())
        }
    });
    let state = state_with(validator);
    let server = server(&certs, state.clone()).await;
    let mut c0 = connect(&server, &certs, 0).await;
    let mut c1 = connect(&server, &certs, 1).await;
    state
        .open_round(round(1, &[0, 1], payload(1, 10), LIMIT, 1))
        .unwrap();
    take_part(&mut c0, Bytes::from_static(b"good 0"))
        .await
        .unwrap();
    let before = state.report(1).unwrap().uploads;
    let err = take_part(&mut c1, Bytes::from_static(b"bad 1"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, NetError::Refused { round: 1, .. }), "{text}");
    assert!(
        text.contains("validation: device 1 round 1: payload starts with 'bad'"),
        "{text}"
    );
    let report = state.report(1).unwrap();
    assert_eq!(report.uploads, before);
    assert_eq!(report.outcome, RoundOutcome::Open);
    let one = &report.devices[&1];
    assert_eq!(one.state, DeviceState::Training);
    assert_eq!(one.refusals.len(), 1, "{one:?}");
    // The device may send a corrected upload before the deadline.
    within("upload", LIMIT, c1.upload(1, Bytes::from_static(b"good 1")))
        .await
        .unwrap();
    let report = within("round", LIMIT, state.wait_round(1)).await.unwrap();
    assert_eq!(report.uploads.len(), 2);
    assert_eq!(report.uploads[&1], Bytes::from_static(b"good 1"));
}

#[tokio::test]
async fn clients_reconnect_by_retrying_after_the_server_restarts() {
    let certs = certs(2);
    let first_state = state();
    let first = server(&certs, first_state.clone()).await;
    let addr = first.local_addr();
    let mut c0 = connect(&first, &certs, 0).await;
    first_state
        .open_round(round(1, &[0], payload(1, 10), LIMIT, 1))
        .unwrap();
    take_part(&mut c0, Bytes::from_static(b"before"))
        .await
        .unwrap();
    within("shutdown", LIMIT, first.shutdown(Duration::from_secs(2)))
        .await
        .unwrap();

    // A device that starts while the server is down waits for it.
    let late = tokio::spawn(DeviceClient::connect(client_config_at(addr, &certs, 1)));
    tokio::time::sleep(Duration::from_millis(600)).await;

    // The new process: the runner restored its state (round 2 next) and binds the same port.
    let second_state = state();
    second_state
        .open_round(round(2, &[0, 1], payload(2, 3 << 20), LIMIT, 2))
        .unwrap();
    let _second = server_on(addr, &certs, second_state.clone()).await;
    assert_eq!(
        take_part(&mut c0, Bytes::from_static(b"after"))
            .await
            .unwrap(),
        2
    );
    let stats = c0.stats();
    assert!(stats.retries + stats.reregistrations > 0, "{stats:?}");
    let mut c1 = within("late connect", LIMIT, late).await.unwrap().unwrap();
    assert!(c1.stats().retries > 0, "{:?}", c1.stats());
    take_part(&mut c1, Bytes::from_static(b"late"))
        .await
        .unwrap();
    let report = within("round 2", LIMIT, second_state.wait_round(2))
        .await
        .unwrap();
    assert_eq!(report.outcome, RoundOutcome::Completed);
    assert_eq!(report.uploads.len(), 2);
}

/// What a device's payload for a round is, so the test can check every accepted upload.
fn soak_payload(device: u32, round: u64) -> Bytes {
    payload(
        device as u64 * 1000 + round,
        2048 + (round as usize % 7) * 4096,
    )
}

#[tokio::test]
async fn soak_thirty_rounds_with_devices_joining_and_leaving() {
    const DEVICES: usize = 4;
    const ROUNDS: u64 = 30;
    let certs = Arc::new(certs(DEVICES));
    let state = state();
    let server = Arc::new(server(&certs, state.clone()).await);
    let mut rng = fastrand::Rng::with_seed(2026);
    // Per device: the round it will abandon after pulling its task (its process ends).
    let leave_at: Arc<Mutex<BTreeMap<u32, u64>>> = Arc::default();
    // What the devices saw accepted, (device, round).
    let accepted: Arc<Mutex<BTreeSet<(u32, u64)>>> = Arc::default();
    let mut running: BTreeMap<u32, tokio::task::JoinHandle<()>> = BTreeMap::new();
    let start = Instant::now();
    let mut completed = 0;
    for r in 1..=ROUNDS {
        // Finished device tasks are offline; an offline device joins with probability 1/2 once
        // the server has forgotten it.
        running.retain(|_, h| !h.is_finished());
        let connected = state.connected_devices();
        for d in 0..DEVICES as u32 {
            let offline = !running.contains_key(&d) && !connected.contains(&d);
            if offline && (running.is_empty() || rng.bool()) {
                let (server, certs) = (server.clone(), certs.clone());
                let (leave_at, accepted) = (leave_at.clone(), accepted.clone());
                running.insert(
                    d,
                    tokio::spawn(async move {
                        let config = client_config(&server, &certs, d as usize);
                        let Ok(mut client) = DeviceClient::connect(config).await else {
                            return;
                        };
                        while let Ok(Pull::Task(t)) = client.next_task(LIMIT).await {
                            if leave_at.lock().unwrap().get(&d) == Some(&t.round) {
                                return;
                            }
                            if client.download(&t).await.is_err() {
                                continue;
                            }
                            if client
                                .upload(t.round, soak_payload(d, t.round))
                                .await
                                .is_ok()
                            {
                                accepted.lock().unwrap().insert((d, t.round));
                            }
                        }
                    }),
                );
            }
        }
        // The participants: every device connected now (wait until the new ones registered).
        let waited = Instant::now();
        let participants: Vec<u32> = loop {
            running.retain(|_, h| !h.is_finished());
            let connected = state.connected_devices();
            if !connected.is_empty() && running.keys().all(|d| connected.contains(d)) {
                break connected;
            }
            assert!(waited.elapsed() < LIMIT, "devices did not register in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // About one round in four, one participant leaves in the middle of it.
        if rng.u32(0..4) == 0 {
            let d = participants[rng.usize(0..participants.len())];
            leave_at.lock().unwrap().insert(d, r);
        }
        state
            .open_round(round(
                r,
                &participants,
                payload(r, 4096),
                Duration::from_secs(5),
                1,
            ))
            .unwrap();
        let report = within("round", LIMIT, state.wait_round(r)).await.unwrap();
        let leaver = leave_at
            .lock()
            .unwrap()
            .iter()
            .find(|(_, lr)| **lr == r)
            .map(|(d, _)| *d);
        for (d, device) in &report.devices {
            if Some(*d) == leaver {
                assert_eq!(device.state, DeviceState::Dropped, "round {r} device {d}");
            } else {
                assert_eq!(
                    device.state,
                    DeviceState::Uploaded,
                    "round {r} device {d}: {device:?}"
                );
                assert_eq!(
                    report.uploads[d],
                    soak_payload(*d, r),
                    "round {r} device {d}"
                );
            }
        }
        if report.outcome == RoundOutcome::Completed {
            completed += 1;
        }
    }
    state.finish();
    for (_, handle) in running {
        within("device ends", LIMIT, handle).await.unwrap();
    }
    // Nothing a device saw accepted is missing from its round.
    let accepted = accepted.lock().unwrap().clone();
    for (d, r) in &accepted {
        let report = state.report(*r).unwrap();
        assert_eq!(
            report.uploads.get(d),
            Some(&soak_payload(*d, *r)),
            "round {r} device {d}"
        );
    }
    let total: usize = (1..=ROUNDS)
        .map(|r| state.report(r).unwrap().uploads.len())
        .sum();
    assert_eq!(accepted.len(), total);
    assert!(completed >= 25, "{completed} of {ROUNDS} rounds completed");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
}
