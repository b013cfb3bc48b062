//! grpcurl against each service's port: reflection (v1 and v1alpha) lists
//! exactly what that port serves, plus health and reflection, and health
//! answers for each of them.

use crate::support::TestGateway;

use std::collections::BTreeSet;

use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

const HEALTH: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

async fn listed_v1(channel: Channel) -> BTreeSet<String> {
    use v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection v1")
        .into_inner();
    match answers
        .next()
        .await
        .expect("an answer")
        .expect("ok")
        .message_response
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a service list: {other:?}"),
    }
}

/// Whether reflection v1 describes each of `services` (grpcurl `describe`).
async fn described_v1(channel: Channel, services: &BTreeSet<String>) {
    use v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    for service in services {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(service.clone())),
        };
        let mut answers = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::once(request))
            .await
            .expect("reflection v1")
            .into_inner();
        match answers
            .next()
            .await
            .expect("an answer")
            .expect("ok")
            .message_response
        {
            Some(MessageResponse::FileDescriptorResponse(files)) => {
                assert!(!files.file_descriptor_proto.is_empty(), "{service}");
            }
            other => panic!("{service} is listed but not described: {other:?}"),
        }
    }
}

async fn listed_v1alpha(channel: Channel) -> BTreeSet<String> {
    use v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    match answers
        .next()
        .await
        .expect("an answer")
        .expect("ok")
        .message_response
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a service list: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_port_lists_exactly_what_it_serves() {
    let gateway = TestGateway::start().await;
    let ports = [
        ("quill.auth.v1.AuthService", gateway.auth.channel.clone()),
        (
            "quill.content.v1.ContentService",
            gateway.content.channel.clone(),
        ),
        (
            "quill.notification.v1.NotificationService",
            gateway.notification.channel.clone(),
        ),
    ];
    for (service, channel) in ports {
        let expected: BTreeSet<String> = [service, HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA]
            .map(String::from)
            .into();
        assert_eq!(
            listed_v1(channel.clone()).await,
            expected,
            "v1 on {service}"
        );
        described_v1(channel.clone(), &expected).await;
        assert_eq!(
            listed_v1alpha(channel.clone()).await,
            expected,
            "v1alpha on {service}"
        );
        for name in ["", service] {
            let status = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: name.to_owned(),
                })
                .await
                .expect("health")
                .into_inner()
                .status();
            assert_eq!(
                status,
                ServingStatus::Serving,
                "health of {name:?} on {service}"
            );
        }
    }
}
