//! Payloads move in chunks below the message limit, with their hash checked, and broken
//! transfers resume from their offset.

mod common;

use std::time::Duration;

use common::*;
use cotune_net::{DeviceClient, DeviceState, Pull, RoundOutcome, MAX_MESSAGE_BYTES};

const MIB: usize = 1 << 20;
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn twenty_mib_go_down_and_up_in_chunks_with_the_hash_checked() {
    let certs = certs(1);
    let state = state();
    let server = server(&certs, state.clone()).await;
    let download = payload(1, 20 * MIB);
    let upload = payload(2, 20 * MIB + 17);
    let mut client = within(
        "connect",
        LIMIT,
        DeviceClient::connect(client_config(&server, &certs, 0)),
    )
    .await
    .unwrap();
    state
        .open_round(round(1, &[0], download.clone(), Duration::from_secs(50), 1))
        .unwrap();
    let Pull::Task(task) = within("pull", LIMIT, client.next_task(LIMIT))
        .await
        .unwrap()
    else {
        panic!("no task");
    };
    assert_eq!(task.round, 1);
    assert_eq!(&task.task[..], b"round 1 device 0");
    let got = within("download", LIMIT, client.download(&task))
        .await
        .unwrap();
    assert_eq!(got, download);
    within("upload", LIMIT, client.upload(1, upload.clone()))
        .await
        .unwrap();
    let report = within("round", LIMIT, state.wait_round(1)).await.unwrap();
    assert_eq!(report.outcome, RoundOutcome::Completed);
    assert_eq!(report.uploads[&0], upload);
    let device = &report.devices[&0];
    assert_eq!(device.state, DeviceState::Uploaded);
    assert_eq!(device.upload_len, Some(upload.len() as u64));
    // 1 MiB chunks: at least 20 messages each way, every one under the 4 MiB limit, and the
    // framing a small part of the traffic.
    assert!(device.largest_message_bytes < MAX_MESSAGE_BYTES as u64);
    assert!(device.largest_message_bytes > MIB as u64);
    let (down, up) = (device.sent_wire_bytes, device.received_wire_bytes);
    assert!(
        down > 20 * MIB as u64 && down < 20 * MIB as u64 + 64 * 1024,
        "{down}"
    );
    assert!(
        up > upload.len() as u64 && up < upload.len() as u64 + 64 * 1024,
        "{up}"
    );
    let stats = client.stats();
    assert!(stats.largest_message_bytes < MAX_MESSAGE_BYTES as u64);
    // The server also counts the task and upload replies; the client only the chunks.
    assert!(stats.received_wire_bytes <= down && down - stats.received_wire_bytes < 1024);
    assert!(
        stats.sent_wire_bytes == up,
        "{} {up}",
        stats.sent_wire_bytes
    );
    assert_eq!((stats.download_resumes, stats.upload_resumes), (0, 0));
    assert!(report
        .progress_line()
        .contains("round 1 completed: 1 uploaded"));
}

#[tokio::test]
async fn broken_transfers_resume_from_their_offset_with_identical_bytes() {
    let certs = certs(1);
    let state = state();
    let server = server(&certs, state.clone()).await;
    let download = payload(3, 12 * MIB + 5);
    let upload = payload(4, 12 * MIB + 9);
    let mut config = client_config(&server, &certs, 0);
    config.faults.cut_download_after_chunks = Some(3);
    config.faults.cut_upload_after_chunks = Some(4);
    let mut client = within("connect", LIMIT, DeviceClient::connect(config))
        .await
        .unwrap();
    state
        .open_round(round(7, &[0], download.clone(), Duration::from_secs(50), 1))
        .unwrap();
    let Pull::Task(task) = within("pull", LIMIT, client.next_task(LIMIT))
        .await
        .unwrap()
    else {
        panic!("no task");
    };
    let got = within("download", LIMIT, client.download(&task))
        .await
        .unwrap();
    assert_eq!(got, download);
    within("upload", LIMIT, client.upload(7, upload.clone()))
        .await
        .unwrap();
    let stats = client.stats().clone();
    assert_eq!(stats.download_resumes, 1, "{stats:?}");
    assert_eq!(stats.upload_resumes, 1, "{stats:?}");
    let report = within("round", LIMIT, state.wait_round(7)).await.unwrap();
    assert_eq!(report.uploads[&0], upload);
    let device = &report.devices[&0];
    // Resumed, not restarted: no byte was read twice. The client read each download chunk
    // once, and the server read each upload chunk once (framing is under 100 bytes a chunk).
    let framing = 64 * 1024;
    assert!(
        stats.received_wire_bytes < download.len() as u64 + framing,
        "{stats:?}"
    );
    assert!(
        device.received_wire_bytes < upload.len() as u64 + framing,
        "{device:?}"
    );
    // The server counts what it handed to HTTP/2, including the chunks in flight at the cut.
    assert!(
        device.sent_wire_bytes < download.len() as u64 + 8 * MIB as u64,
        "{device:?}"
    );
    assert!(device.refusals.is_empty(), "{device:?}");
}
