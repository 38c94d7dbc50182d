//! Property tests of the `traceparent` parser against the spec's grammar.

use manifold_telemetry::context::{format_traceparent, TraceParent};
use manifold_telemetry::{SpanId, TraceId};
use proptest::prelude::*;

proptest! {
    /// Whatever we format, we parse back the same (ids non-zero).
    #[test]
    fn format_then_parse_is_identity(
        t in any::<[u8; 16]>().prop_filter("non-zero", |t| *t != [0; 16]),
        s in any::<[u8; 8]>().prop_filter("non-zero", |s| *s != [0; 8]),
        sampled in any::<bool>(),
    ) {
        let text = format_traceparent(&TraceId(t), &SpanId(s), sampled);
        prop_assert_eq!(text.len(), 55);
        let p = TraceParent::parse(text.as_bytes()).expect("our own output parses");
        prop_assert_eq!((p.trace_id.0, p.parent_id.0, p.sampled(), p.version), (t, s, sampled, 0));
    }

    /// Anything accepted is well-formed: its first 55 bytes are the spec's shape in lowercase hex,
    /// with non-zero ids and a version other than ff.
    #[test]
    fn whatever_is_accepted_is_well_formed(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(p) = TraceParent::parse(&bytes) {
            prop_assert!(!p.trace_id.is_zero() && !p.parent_id.is_zero() && p.version != 0xff);
        }
    }

    /// Changing any one character of a valid version-00 value to a non-hex one is refused
    /// (except the dashes, which are refused when changed at all).
    #[test]
    fn one_bad_character_is_refused(pos in 0usize..55, c in any::<char>()) {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let is_dash = matches!(pos, 2 | 35 | 52);
        let same_class = if is_dash { c == '-' } else { c.is_ascii_digit() || ('a'..='f').contains(&c) };
        prop_assume!(!same_class);
        let mut s: Vec<char> = valid.chars().collect();
        s[pos] = c;
        let s: String = s.into_iter().collect();
        // A space at either end is optional whitespace, trimmed: still the wrong length.
        prop_assert!(TraceParent::parse(s.as_bytes()).is_err(), "{:?}", s);
    }
}

mod wire {
    use std::sync::Arc;
    use std::time::Duration;

    use http::Method;
    use manifold_telemetry::otlp::{encode_batch, encode_request, RequestEncoder, ResourceInfo};
    use manifold_telemetry::{
        AttemptKind, CacheOutcome, CallInfo, CallOutcome, CallRecord, Endpoint, FinishedTrace,
        RequestId, RootInfo, RootKind, ServerOutcome, SpanId, TraceId,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use proptest::prelude::*;
    use prost::Message;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z/{}]{0,12}",
            any::<String>(),
            Just(String::new()),
            "x{200,300}",
        ]
    }

    fn call() -> impl Strategy<Value = CallRecord> {
        (
            (any::<[u8; 8]>(), text(), text(), text()),
            (
                proptest::option::of((text(), any::<u16>(), any::<bool>())),
                0u32..5,
                0usize..3,
                any::<bool>(),
            ),
            (
                0u64..10_000_000_000,
                0u64..5_000_000_000,
                proptest::option::of(0u64..5_000_000_000),
            ),
            (
                proptest::option::of(0u16..700),
                proptest::option::of(text()),
                proptest::option::of(0usize..5),
                proptest::option::of(any::<u64>()),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (id, name, upstream, path),
                    (endpoint, attempt, kind, enqueue),
                    (start, len, fb),
                    (status, error_type, cache, bytes, cancelled),
                )| {
                    let tiers = [
                        CacheOutcome::L1,
                        CacheOutcome::L2,
                        CacheOutcome::Miss,
                        CacheOutcome::Coalesced,
                        CacheOutcome::Stale,
                    ];
                    CallRecord {
                        span_id: SpanId(id),
                        info: CallInfo {
                            call: Arc::from(name),
                            upstream: Arc::from(upstream),
                            method: Method::PATCH,
                            path: path.into(),
                            endpoint: endpoint.map(|(address, port, https)| Endpoint {
                                address: Arc::from(address),
                                port,
                                https,
                            }),
                            attempt,
                            attempt_kind: [
                                AttemptKind::First,
                                AttemptKind::Retry,
                                AttemptKind::Hedge,
                            ][kind],
                            enqueue,
                        },
                        start: Duration::from_nanos(start),
                        first_byte: fb.map(|f| Duration::from_nanos(start + f)),
                        end: Duration::from_nanos(start + len),
                        outcome: CallOutcome {
                            status,
                            error_type: error_type.map(Into::into),
                            cache: cache.map(|c| tiers[c]),
                            response_bytes: bytes,
                            cancelled,
                        },
                    }
                },
            )
    }

    fn trace() -> impl Strategy<Value = FinishedTrace> {
        (
            (
                any::<[u8; 16]>(),
                any::<[u8; 8]>(),
                proptest::option::of(any::<[u8; 8]>()),
            ),
            (
                any::<bool>(),
                proptest::option::of("[a-z]{1,8}=[a-z0-9]{1,8}"),
                // What a request id may be: visible ASCII, 1 to 128 characters.
                "[!-~]{1,128}".prop_map(|s| RequestId::copied(s.as_bytes()).expect("valid")),
            ),
            (
                any::<u64>(),
                0u64..100_000_000_000,
                any::<bool>(),
                text(),
                text(),
            ),
            (
                any::<u16>(),
                any::<u64>(),
                proptest::collection::vec(text(), 0..3),
                proptest::option::of(text()),
            ),
            proptest::collection::vec(call(), 0..6),
        )
            .prop_map(
                |(
                    (t, s, parent),
                    (sampled, tracestate, request_id),
                    (epoch, dur, consumer, route, path),
                    (status, bytes, partial, error_type),
                    calls,
                )| {
                    FinishedTrace {
                        trace_id: TraceId(t),
                        span_id: SpanId(s),
                        parent: parent.map(SpanId),
                        sampled,
                        kept: true,
                        tracestate,
                        request_id,
                        epoch_ns: epoch,
                        duration: Duration::from_nanos(dur),
                        root: RootInfo {
                            kind: if consumer {
                                RootKind::Consumer
                            } else {
                                RootKind::Server
                            },
                            method: Method::GET,
                            route: Arc::from(route),
                            path: path.into(),
                        },
                        outcome: ServerOutcome {
                            status,
                            response_bytes: bytes,
                            partial: partial.into_iter().map(Arc::from).collect(),
                            error_type: error_type.map(Into::into),
                            client_wait: Duration::ZERO,
                        },
                        calls,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The direct writer's bytes decode (with the prost types) to exactly what the
        /// prost-typed reference encoder builds.
        #[test]
        fn the_direct_encoder_matches_the_prost_reference(
            traces in proptest::collection::vec(trace(), 0..4),
            service in text(),
        ) {
            matches_the_reference(service, &traces)?;
        }

        /// The same, with the calls' names, upstreams and endpoint addresses and the routes
        /// shared between spans as the gateway shares them (one `Arc` each): the encoder's
        /// cached blocks are copied for every span after the first of its shape.
        #[test]
        fn cached_blocks_match_the_prost_reference(
            mut traces in proptest::collection::vec(trace(), 1..6),
            service in text(),
        ) {
            share_names(&mut traces);
            matches_the_reference(service, &traces)?;
        }

        /// The exporter's encoder, kept from batch to batch, matches the reference on each:
        /// a batch of the previous one's shapes (its cached blocks), then the same traces
        /// with every name in an `Arc` of its own (new keys: the old traces are gone, their
        /// `Arc`s held by the cache only).
        #[test]
        fn a_kept_encoder_matches_the_prost_reference_batch_after_batch(
            mut traces in proptest::collection::vec(trace(), 1..6),
            split in 0usize..6,
        ) {
            share_names(&mut traces);
            let resource = ResourceInfo { service_name: "s".to_owned() };
            let mut encoder = RequestEncoder::default();
            let split = split.min(traces.len());
            let unshared: Vec<FinishedTrace> = traces.iter().map(unshare).collect();
            for batch in [&traces[..split], &traces[split..], &traces[..], &unshared[..]] {
                let bytes = encoder.encode(&resource, batch.iter(), 0);
                let decoded =
                    ExportTraceServiceRequest::decode(&bytes[..]).expect("valid protobuf");
                prop_assert_eq!(&decoded, &encode_batch(&resource, batch.iter()));
            }
            drop(traces);
            let bytes = encoder.encode(&resource, unshared.iter(), 0);
            let decoded = ExportTraceServiceRequest::decode(&bytes[..]).expect("valid protobuf");
            prop_assert_eq!(&decoded, &encode_batch(&resource, unshared.iter()));
        }
    }

    /// The trace with every shared string in an `Arc` of its own.
    fn unshare(t: &FinishedTrace) -> FinishedTrace {
        let mut t = t.clone();
        t.root.route = Arc::from(&*t.root.route);
        for c in &mut t.calls {
            c.info.call = Arc::from(&*c.info.call);
            c.info.upstream = Arc::from(&*c.info.upstream);
            if let Some(e) = &mut c.info.endpoint {
                e.address = Arc::from(&*e.address);
            }
        }
        t
    }

    /// Give every call the `Arc`s of one of the first two calls with an endpoint, and every
    /// route the first trace's, as the gateway shares them: two of three calls take that
    /// call's whole shape (attempt, kind, port and scheme too: the cached blocks are copied),
    /// the third only its `Arc`s (a shape of its own: its blocks are encoded, replacing an
    /// entry when they land on a used slot).
    /// The direct writer's bytes for `traces` decode (with the prost types) to exactly what the
    /// prost-typed reference encoder builds, and are as long.
    fn matches_the_reference(
        service: String,
        traces: &[FinishedTrace],
    ) -> Result<(), TestCaseError> {
        let resource = ResourceInfo {
            service_name: service,
        };
        let bytes = encode_request(&resource, traces.iter());
        let decoded = ExportTraceServiceRequest::decode(&bytes[..]).expect("valid protobuf");
        let reference = encode_batch(&resource, traces.iter());
        prop_assert_eq!(&decoded, &reference);
        prop_assert_eq!(bytes.len(), reference.encoded_len());
        Ok(())
    }

    fn share_names(traces: &mut [FinishedTrace]) {
        let shared: Vec<CallInfo> = traces
            .iter()
            .flat_map(|t| t.calls.iter())
            .filter(|c| c.info.endpoint.is_some())
            .take(2)
            .map(|c| c.info.clone())
            .collect();
        let route = Arc::clone(&traces[0].root.route);
        for t in traces.iter_mut() {
            t.root.route = Arc::clone(&route);
            for (n, c) in t.calls.iter_mut().enumerate() {
                let Some(from) = shared.get(n % 2) else {
                    continue;
                };
                let i = &mut c.info;
                i.call = Arc::clone(&from.call);
                i.upstream = Arc::clone(&from.upstream);
                if n % 3 == 0 {
                    if let (Some(e), Some(f)) = (&mut i.endpoint, &from.endpoint) {
                        e.address = Arc::clone(&f.address);
                    }
                } else {
                    i.endpoint.clone_from(&from.endpoint);
                    i.attempt = from.attempt;
                    i.attempt_kind = from.attempt_kind;
                }
            }
        }
    }
}
