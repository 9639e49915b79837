//! An OTLP/gRPC trace client that sends pre-encoded request bytes, so that
//! the generator does not re-encode protobuf on every send.

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use tonic::Status;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Writes the bytes as they are; ignores the response body (an
/// `ExportTraceServiceResponse` that the generator does not read).
#[derive(Default, Clone, Copy)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

#[derive(Clone)]
pub struct RawTraceClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl RawTraceClient {
    pub async fn connect(endpoint: &str, gzip: bool) -> anyhow::Result<RawTraceClient> {
        let channel = Channel::from_shared(endpoint.to_string())?
            .connect()
            .await?;
        let mut grpc = tonic::client::Grpc::new(channel);
        if gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        Ok(RawTraceClient { grpc })
    }

    pub async fn export(&mut self, body: Bytes) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|err| Status::unavailable(err.to_string()))?;
        let path = PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        );
        self.grpc
            .unary(tonic::Request::new(body), path, RawCodec)
            .await
            .map(|_| ())
    }
}
