//! Generated code for Quill's contracts: the gRPC APIs of auth, content and
//! notification, and the event envelope that travels over RabbitMQ.

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("quill.auth.v1");
    }
}

pub mod content {
    pub mod v1 {
        tonic::include_proto!("quill.content.v1");
    }
}

pub mod notification {
    pub mod v1 {
        tonic::include_proto!("quill.notification.v1");

        /// Response metadata of `Subscribe`: the id the stream starts after,
        /// for `SubscribeRequest.after_id` should it end before its first
        /// notification (see notification.proto).
        pub const STREAM_POSITION: &str = "x-quill-stream-position";
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("quill.events.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Quill proto (imports included), for
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/quill_descriptor.bin"));
