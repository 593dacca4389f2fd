use super::*;

fn spec(round: u64, devices: &[u32], min_devices: usize) -> RoundSpec {
    RoundSpec {
        round,
        tasks: devices
            .iter()
            .map(|d| {
                (
                    *d,
                    DeviceTask {
                        task: Bytes::new(),
                        download: Bytes::from_static(b"model"),
                    },
                )
            })
            .collect(),
        deadline: Duration::from_secs(60),
        min_devices,
    }
}

fn chunk(session: u64, round: u64, offset: u64, whole: &[u8], data: &[u8]) -> proto::UploadChunk {
    proto::UploadChunk {
        session,
        round,
        offset,
        total_len: whole.len() as u64,
        sha256: Bytes::copy_from_slice(&Sha256::digest(whole)),
        data: Bytes::copy_from_slice(data),
    }
}

#[test]
fn rounds_open_one_at_a_time_with_growing_numbers_and_a_reachable_minimum() {
    let state = ServerState::new(StateConfig::default()).unwrap();
    let err = state
        .open_round(spec(1, &[0, 1], 3))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "round 1: minimum of 3 devices is above its 2 participants"
    );
    let err = state.open_round(spec(1, &[], 0)).unwrap_err().to_string();
    assert_eq!(err, "round 1: has no participants");
    state.open_round(spec(2, &[0, 1], 1)).unwrap();
    let err = state.open_round(spec(3, &[0], 1)).unwrap_err().to_string();
    assert_eq!(err, "round 3: round 2 is still open");
    assert_eq!(state.open_round_number(), Some(2));
    state.finish();
    let err = state.open_round(spec(3, &[0], 1)).unwrap_err().to_string();
    assert_eq!(err, "round 3: the run has finished");
}

#[test]
fn chunks_append_skip_overlap_refuse_gaps_and_check_the_hash() {
    let state = ServerState::new(StateConfig::default()).unwrap();
    let session = state.register(4, 99).unwrap();
    // The same process registering again gets its session back; another is refused.
    assert_eq!(state.register(4, 99).unwrap(), session);
    assert!(matches!(
        state.register(4, 7),
        Err(Refusal::AlreadyConnected(_))
    ));
    state.open_round(spec(1, &[4], 1)).unwrap();
    let whole = b"0123456789";
    let ok = state
        .upload_chunk(4, &chunk(session, 1, 0, whole, b"0123"), 10)
        .unwrap();
    assert_eq!((ok.held, ok.complete.is_none()), (4, true));
    let gap = state.upload_chunk(4, &chunk(session, 1, 6, whole, b"6789"), 10);
    assert!(matches!(gap, Err(Refusal::Offset(_))));
    let overlap = state
        .upload_chunk(4, &chunk(session, 1, 2, whole, b"234567"), 10)
        .unwrap();
    assert_eq!(overlap.held, 8);
    let status = state.upload_status(4, session, 1).unwrap();
    assert_eq!((status.held, status.accepted), (8, false));
    let last = state
        .upload_chunk(4, &chunk(session, 1, 8, whole, b"89"), 10)
        .unwrap();
    let (bytes, sha) = last.complete.unwrap();
    assert_eq!(&bytes[..], whole);
    state.validate_and_accept(4, 1, bytes, sha).unwrap();
    let report = state.report(1).unwrap();
    assert_eq!(report.outcome, RoundOutcome::Completed);
    assert_eq!(report.devices[&4].received_wire_bytes, 40);

    // A payload whose bytes do not match the announced hash is refused.
    state.open_round(spec(2, &[4], 1)).unwrap();
    let mut lying = chunk(session, 2, 0, b"abc", b"abd");
    lying.total_len = 3;
    let refused = state.upload_chunk(4, &lying, 10);
    assert!(matches!(&refused, Err(Refusal::Invalid(r)) if r.contains("not the announced")));
    // Wrong session: register again.
    let wrong = state.upload_chunk(4, &chunk(session + 2, 2, 0, b"abc", b"abc"), 10);
    assert!(matches!(wrong, Err(Refusal::Session(_))));
}
