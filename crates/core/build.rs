//! Packs the `cl100k_base` vocabulary for [`tokenizer`](src/tokenizer.rs): its 100,256 tokens, each as a
//! length byte and its bytes, deflated (about 0.45 MB). The tokenizer rebuilds the BPE from it on its warm-up
//! thread, so the binary does not carry `bpe-openai`'s serialized automata (15 MB, half the chat binary):
//! the vocabulary is read here, from that crate, so the two cannot drift apart.

// A build script: failing loudly is its job.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

fn main() {
    let bpe = &bpe_openai::cl100k_base().bpe;
    let mut raw = Vec::with_capacity(800_000);
    for id in 0..bpe.num_tokens() {
        let token = bpe.token_bytes(u32::try_from(id).expect("token ids fit u32"));
        raw.push(u8::try_from(token.len()).expect("a cl100k token is at most 255 bytes"));
        raw.extend_from_slice(token);
    }
    let packed = miniz_oxide::deflate::compress_to_vec(&raw, 10);
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("cl100k_tokens.deflate");
    std::fs::write(out, packed).expect("OUT_DIR is writable");
    println!("cargo::rerun-if-changed=build.rs");
}
