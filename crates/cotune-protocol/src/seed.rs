//! The seeds of a round: every phase of every device (and of the server) in every epoch draws
//! its own seed from the experiment seed, so a device's numbers depend neither on the other
//! devices nor on the order the work runs in.

/// The random streams of a round. Each one is a phase of training or sampling; the number it
/// maps to ([`Stream::number`]) is part of the seed, so it must never change for an existing
/// stream (runs would stop reproducing). Streams of the server and of the devices never share a
/// [`RoundSeed`], so two streams may map to the same number when one is drawn only on the
/// server and the other only on devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The server's subsample of the public corpus for the round.
    PublicSample,
    /// A device's SLM tuned on its local data.
    SlmLocalTuning,
    /// The server LLM tuned on every device's data (`centralized`, on the server's seed).
    CentralizedLlm,
    /// A device's DPM (its shared part) tuned on its local data.
    DpmLocalTuning,
    /// The server LLM learning from the devices' selected knowledge (`fedmkt`, on the server's
    /// seed).
    LlmFromKnowledge,
    /// Domain-specific tuning of a device's DPM adapters.
    DomainSpecificTuning,
    /// Device-side mutual learning between the SLM and the DPM.
    DeviceMutualLearning,
    /// The questions a device's DPM writes for the `synthetic` transfer set.
    SyntheticQuestions,
    /// Server-side mutual learning between the LLM and the DPM in the given slot.
    ServerMutualLearning(usize),
    /// A device's SLM learning from the LLM's knowledge (`fedmkt`).
    SlmFromKnowledge,
    /// The Gaussian noise a device adds to its update (`[privacy] mode = "local"`).
    UploadNoise,
    /// The misbehaving device's random update (`[attack] kind = "random"`).
    Attack,
    /// The Gaussian noise the server adds to the sum of the updates (`mode = "central"`).
    CentralNoise,
    /// The unlabelled prompts a device draws for its round (`transfer = "prompts"`).
    DevicePrompts,
    /// The public prompts the server draws for its round (`server_prompts`).
    ServerPrompts,
}

impl Stream {
    /// The number the stream contributes to a seed.
    pub fn number(self) -> u64 {
        match self {
            Stream::PublicSample => 0,
            Stream::SlmLocalTuning | Stream::CentralizedLlm => 1,
            Stream::DpmLocalTuning | Stream::LlmFromKnowledge => 2,
            Stream::DomainSpecificTuning => 3,
            Stream::DeviceMutualLearning => 4,
            Stream::SyntheticQuestions => 5,
            Stream::ServerMutualLearning(slot) => 6 + slot as u64,
            Stream::SlmFromKnowledge => 7,
            // Far from `6 + slot`.
            Stream::UploadNoise => 1_000_001,
            Stream::Attack => 1_000_002,
            Stream::CentralNoise => 1_000_003,
            Stream::DevicePrompts => 1_000_004,
            Stream::ServerPrompts => 1_000_005,
        }
    }
}

/// Whose seed: a device's, or the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// Device `i`.
    Device(usize),
    /// The server.
    Server,
    /// The server, working with device `i`'s DPM (one DPM per device).
    ServerWith(usize),
}

impl Party {
    fn index(self) -> usize {
        match self {
            Party::Device(i) => i,
            Party::Server => usize::MAX,
            Party::ServerWith(i) => usize::MAX - 1 - i,
        }
    }
}

/// The seeds of one party's phases in one round.
#[derive(Debug, Clone, Copy)]
pub struct RoundSeed {
    /// The experiment seed.
    pub seed: u64,
    /// The round.
    pub round: usize,
    /// Whose seeds.
    pub party: Party,
}

impl RoundSeed {
    /// The seeds of `party` in `round` of an experiment with `seed`.
    pub fn new(seed: u64, round: usize, party: Party) -> Self {
        Self { seed, round, party }
    }

    /// The seed of `stream`'s `epoch`.
    pub fn of(&self, stream: Stream, epoch: usize) -> u64 {
        let parts = [
            self.seed.to_string(),
            self.round.to_string(),
            self.party.index().to_string(),
            stream.number().to_string(),
            epoch.to_string(),
        ];
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        u64::from_str_radix(&cotune_distill::stable_hash(&refs), 16).expect("16 hex digits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_by_party_stream_and_epoch_and_are_stable() {
        let s = |party, stream, epoch| RoundSeed::new(7, 3, party).of(stream, epoch);
        let a = s(Party::Device(0), Stream::SlmLocalTuning, 0);
        assert_eq!(a, s(Party::Device(0), Stream::SlmLocalTuning, 0));
        assert_ne!(a, s(Party::Device(1), Stream::SlmLocalTuning, 0));
        assert_ne!(a, s(Party::Device(0), Stream::DpmLocalTuning, 0));
        assert_ne!(a, s(Party::Device(0), Stream::SlmLocalTuning, 1));
        assert_ne!(
            s(Party::Server, Stream::ServerMutualLearning(0), 0),
            s(Party::ServerWith(0), Stream::ServerMutualLearning(0), 0)
        );
        // The numbers are part of every run's seeds: they must not move.
        let numbers: Vec<u64> = [
            Stream::PublicSample,
            Stream::SlmLocalTuning,
            Stream::DpmLocalTuning,
            Stream::DomainSpecificTuning,
            Stream::DeviceMutualLearning,
            Stream::SyntheticQuestions,
            Stream::ServerMutualLearning(0),
            Stream::SlmFromKnowledge,
        ]
        .iter()
        .map(|s| s.number())
        .collect();
        assert_eq!(numbers, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(Party::ServerWith(2).index(), usize::MAX - 3);
    }
}
