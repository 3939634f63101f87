//! The kernel contract: what every generated kernel offers and how it is called, defined once
//! and read by the templates (through the renderers' contexts) and by the runtime, so no entry
//! name, parameter order or binding number is copied by hand.
//!
//! - **Entries.** Four operations, with one name each in the Rust trait, the WGSL and CUDA
//!   sources and the runtime's API: [`Entry::Decode`] (one causal token per lane),
//!   [`Entry::Prefill`] (causal over a block of tokens), [`Entry::Absorb`] (add keys and values)
//!   and [`Entry::Query`] (answer queries from the state). A target may serve `Decode` with its
//!   `Prefill` entry (WGSL does; see [`crate::wgsl::entry_serving`]).
//! - **Buffers.** Every device entry takes the buffers of [`Buffer::ALL`] in that order (CUDA
//!   parameters, WGSL bindings `0..5`), then the lane and token counts.
//! - **Outputs.** An entry that answers queries writes, per lane and token, `d_v` numerators and
//!   then the denominator ([`output_row`] words), summed over the state and *not divided*: the
//!   host divides, counts non-positive denominators and applies the caller's policy, the same
//!   way for every target.
//! - **State layout.** Lanes of a state start every [`lane_stride`] words (the lane's words
//!   rounded up to whole cache lines, as the host `State` keeps them), so a host state and a
//!   device state are copied to each other in one piece.
//! - **Backward.** Two passes, [`Pass::Queries`] (`dq`, rebuilding the state each query read)
//!   and [`Pass::Keys`] (`dk`, `dv` and the state's gradient, backward in time), each run in
//!   [`Phase`]s, over the buffers of [`BackwardBuffer::ALL`]; what they compute is in
//!   `docs/design.md` ("Gradients"). The GPU targets emit them in their plain modules.

use serde::Serialize;

/// One operation of a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Entry {
    /// One token per lane: add its key and value, then answer its query.
    Decode,
    /// Causal attention over a block of tokens per lane: token `t` is added, then answers.
    Prefill,
    /// Add keys and values to the state, answering nothing (non-causal, first half).
    Absorb,
    /// Answer queries from the state, which stays unchanged (non-causal, second half).
    Query,
}

impl Entry {
    pub const ALL: [Entry; 4] = [Self::Decode, Self::Prefill, Self::Absorb, Self::Query];

    /// The entry's name, in every target and in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Prefill => "prefill",
            Self::Absorb => "absorb",
            Self::Query => "query",
        }
    }

    /// Whether the entry answers queries (and writes outputs).
    pub fn answers(self) -> bool {
        !matches!(self, Self::Absorb)
    }

    /// Whether the entry adds keys and values to the state.
    pub fn updates(self) -> bool {
        !matches!(self, Self::Query)
    }

    /// Whether the entry is causal: each query sees the keys before it and its own.
    pub fn causal(self) -> bool {
        matches!(self, Self::Decode | Self::Prefill)
    }

    /// The causal entry for a call of `tokens` tokens per lane.
    pub fn causal_for(tokens: usize) -> Self {
        if tokens == 1 {
            Self::Decode
        } else {
            Self::Prefill
        }
    }

    /// The exported symbol of this entry in module `module` (CUDA): `sata_<module>_<entry>`.
    pub fn symbol(self, module: &str) -> String {
        format!("sata_{module}_{}", self.name())
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One buffer every device entry takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Buffer {
    /// `[lane][token][d_k]`.
    Queries,
    /// `[lane][token][d_k]`.
    Keys,
    /// `[lane][token][d_v]`.
    Values,
    /// Lanes of the state, every [`lane_stride`] words.
    State,
    /// `[lane][token][d_v + 1]` ([`output_row`]); zeroed by the caller before a launch.
    Output,
}

impl Buffer {
    /// The buffers in parameter (CUDA) and binding (WGSL) order.
    pub const ALL: [Buffer; 5] = [
        Self::Queries,
        Self::Keys,
        Self::Values,
        Self::State,
        Self::Output,
    ];

    /// The parameter's name in the generated sources.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queries => "q",
            Self::Keys => "k",
            Self::Values => "v",
            Self::State => "state",
            Self::Output => "out",
        }
    }

    /// Whether an entry may write the buffer.
    pub fn writable(self) -> bool {
        matches!(self, Self::State | Self::Output)
    }

    /// Position in [`Buffer::ALL`]: the CUDA parameter index and the WGSL binding.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Words one answered query writes into [`Buffer::Output`]: `d_v` numerators, then the
/// denominator.
pub fn output_row(d_v: usize) -> usize {
    d_v + 1
}

/// Bytes a lane of a state is aligned to (one cache line on the x86-64 and aarch64 machines
/// the project targets).
pub const LANE_ALIGN_BYTES: usize = 64;

/// Words from the start of one lane of an f32 state to the next: `lane_words` rounded up to
/// whole [`LANE_ALIGN_BYTES`].
pub fn lane_stride(lane_words: usize) -> usize {
    lane_words.next_multiple_of(LANE_ALIGN_BYTES / 4)
}

/// One pass of the backward, an entry of its own in the GPU targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pass {
    /// Pass A, forward in time: rebuilds the state from the initial one in
    /// [`BackwardBuffer::State`] and writes `dq` (`[lane][query][d_k]`).
    Queries,
    /// Pass B, backward in time: accumulates the state's gradient in [`BackwardBuffer::State`]
    /// (seeded with the final state's gradient, left holding the initial state's) and writes
    /// `[dk | dv]` per key (`[lane][key][d_k + d_v]`).
    Keys,
}

impl Pass {
    pub const ALL: [Pass; 2] = [Self::Queries, Self::Keys];

    /// The entry's name in every target.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queries => "backward_queries",
            Self::Keys => "backward_keys",
        }
    }

    /// The exported symbol of this pass in module `module` (CUDA): `sata_<module>_<name>`.
    pub fn symbol(self, module: &str) -> String {
        format!("sata_{module}_{}", self.name())
    }

    /// Words per token of [`BackwardBuffer::Gradients`].
    pub fn gradient_row(self, d_k: usize, d_v: usize) -> usize {
        match self {
            Self::Queries => d_k,
            Self::Keys => d_k + d_v,
        }
    }
}

impl std::fmt::Display for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a launch of a backward pass does with each token it is given (every launch takes one
/// phase; the runtime chains them).
///
/// | | [`Pass::Queries`] | [`Pass::Keys`] (tokens last to first) |
/// |---|---|---|
/// | `Add` | add the key to the state (non-causal: all keys first) | add the query's cotangent (non-causal: all queries first) |
/// | `Step` | add the key, then write the query's `dq` (causal) | add the query's cotangent, then write the key's `dk`, `dv` (causal) |
/// | `Read` | write the query's `dq` | write the key's `dk`, `dv` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Add = 0,
    Step = 1,
    Read = 2,
}

impl Phase {
    /// The phases of one pass: a causal pass steps through its tokens; a non-causal one adds
    /// every token of the other side first, then reads.
    pub fn of(causal: bool) -> &'static [Phase] {
        if causal {
            &[Self::Step]
        } else {
            &[Self::Add, Self::Read]
        }
    }

    /// Whether the phase's tokens are those of the side that adds (keys in pass A, queries in
    /// pass B) rather than those that read; `Step` has one token count for both.
    pub fn adds_only(self) -> bool {
        self == Self::Add
    }
}

/// One buffer every backward entry takes, in CUDA parameter order (WGSL binds them where
/// `wgsl::backward_binding` says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackwardBuffer {
    /// `[lane][token][d_k]`.
    Queries,
    /// `[lane][token][d_k]`.
    Keys,
    /// `[lane][token][d_v]`.
    Values,
    /// `[lane][query][d_v + 1]`: `dO'_t = [dy_t / D_t, -(y_t · dy_t) / D_t]`, zeros for a
    /// query the forward answered with zeros.
    Cotangents,
    /// Lanes every [`lane_stride`]`(state_words)` words, plain layout (`S`, then `Z`): the
    /// initial state (pass A, which overwrites it) or the state's gradient (pass B).
    State,
    /// [`Pass::gradient_row`] words per token.
    Gradients,
    /// [`backward_scratch_words`] per lane, any contents.
    Scratch,
}

impl BackwardBuffer {
    pub const ALL: [BackwardBuffer; 7] = [
        Self::Queries,
        Self::Keys,
        Self::Values,
        Self::Cotangents,
        Self::State,
        Self::Gradients,
        Self::Scratch,
    ];

    /// The parameter's name in the generated CUDA sources.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queries => "q",
            Self::Keys => "k",
            Self::Values => "v",
            Self::Cotangents => "dout",
            Self::State => "state",
            Self::Gradients => "grad",
            Self::Scratch => "scratch",
        }
    }

    pub fn writable(self) -> bool {
        matches!(self, Self::State | Self::Gradients | Self::Scratch)
    }
}

/// Words of per-lane scratch a GPU backward entry of `plan` uses, for chunks of
/// [`crate::gpu::backward_chunk`] tokens `L`: `Phi(k)`, `Phi(q)` and the features' gradients
/// of the chunk's tokens (`L x m` each), the query weights (`m`: CUDA builds them by the
/// recurrence; WGSL reads its tables), then two `L x L` tables of the pair weights inside a
/// chunk.
pub fn backward_scratch_words(plan: &crate::KernelPlan) -> usize {
    let chunk = crate::gpu::backward_chunk(plan);
    plan.features * (3 * chunk + 1) + 2 * chunk * chunk
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backward_passes_and_phases() {
        assert_eq!(Pass::Keys.symbol("d4_v4_p2"), "sata_d4_v4_p2_backward_keys");
        assert_eq!(Pass::Queries.gradient_row(3, 5), 3);
        assert_eq!(Pass::Keys.gradient_row(3, 5), 8);
        assert_eq!(Phase::of(true), &[Phase::Step]);
        assert_eq!(Phase::of(false), &[Phase::Add, Phase::Read]);
        let names: Vec<_> = BackwardBuffer::ALL.iter().map(|b| b.name()).collect();
        assert_eq!(names, ["q", "k", "v", "dout", "state", "grad", "scratch"]);
    }

    #[test]
    fn entries_and_buffers_have_stable_names_and_order() {
        let names: Vec<_> = Entry::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(names, ["decode", "prefill", "absorb", "query"]);
        let buffers: Vec<_> = Buffer::ALL.iter().map(|b| b.name()).collect();
        assert_eq!(buffers, ["q", "k", "v", "state", "out"]);
        for (i, b) in Buffer::ALL.iter().enumerate() {
            assert_eq!(b.index(), i);
        }
        assert!(Entry::Query.answers() && !Entry::Query.updates());
        assert!(!Entry::Absorb.answers() && Entry::Absorb.updates());
        assert_eq!(Entry::causal_for(1), Entry::Decode);
        assert_eq!(Entry::causal_for(7), Entry::Prefill);
        assert_eq!(Entry::Query.symbol("d4_v4_p2"), "sata_d4_v4_p2_query");
    }

    #[test]
    fn lanes_are_padded_to_whole_lines() {
        assert_eq!(lane_stride(16), 16);
        assert_eq!(lane_stride(17), 32);
        assert_eq!(lane_stride(16_473), 16_480);
    }
}
