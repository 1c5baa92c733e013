//! The generated protobuf types, client and server of `fathom.v1`
//! (`proto/fathom/v1/retrieval.proto`), used by the server, the client and
//! `fathom bench`.
#![allow(clippy::all, missing_docs)]
tonic::include_proto!("fathom.v1");

/// The encoded descriptors of `proto/fathom/v1/retrieval.proto`, served
/// by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/fathom_descriptor.bin"));
