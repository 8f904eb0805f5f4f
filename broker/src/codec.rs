//! MQTT 3.1.1 and 5 on the wire, through rumqttc's packet codecs: packets read into the
//! broker's version-neutral [`In`], and the broker's replies encoded in the client's version.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::ConnError;
use crate::message::{Message, Out, PublishProperties, QoS};
use crate::options::INFLIGHT_LIMIT;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V4,
    V5,
}

/// What the first packet said, in either version.
pub(crate) struct ConnectInfo {
    pub(crate) version: Version,
    pub(crate) client_id: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) keep_alive: u16,
    /// Keep the session after the connection ends.
    pub(crate) persistent: bool,
    /// Resume a kept session.
    pub(crate) resume: bool,
    /// How long a kept session outlives the connection (`None`: for ever).
    pub(crate) expiry: Option<Duration>,
    pub(crate) will: Option<Message>,
    /// The will's Message Expiry Interval, in seconds.
    pub(crate) will_expiry: Option<u32>,
    /// MQTT 5 Will Delay Interval (§3.1.3.2.2).
    pub(crate) will_delay: Duration,
    pub(crate) receive_max: usize,
    pub(crate) max_packet: usize,
    /// The MQTT 5 Topic Alias Maximum the client takes (§3.1.2.11.5): how many aliases the
    /// broker may set towards it.
    pub(crate) topic_alias_max: u16,
    /// MQTT 5 Authentication Method (enhanced authentication, not supported).
    pub(crate) auth_method: Option<String>,
}

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    Credentials,
    ClientId,
    /// The session could not be stored.
    Unavailable,
    /// MQTT 5 enhanced authentication (an Authentication Method) is not supported (0x8C).
    AuthMethod,
    /// A protocol level other than 4 or 5 (3.1.1: 0x01, 5: 0x84).
    Version,
}

/// One SUBSCRIBE filter with its MQTT 5 options (§3.8.3.1); MQTT 3.1.1 ones have the defaults.
#[derive(Debug, Clone)]
pub(crate) struct SubRequest {
    pub(crate) filter: String,
    pub(crate) qos: QoS,
    pub(crate) no_local: bool,
    pub(crate) retain_as_published: bool,
    /// Retain Handling: 0 send retained messages at subscribe, 1 only for a new subscription,
    /// 2 never.
    pub(crate) retain_handling: u8,
}

/// Why a subscription is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubRefusal {
    /// Outside the client's rights (0x87).
    NotAuthorized,
    /// Not a valid filter here (0x8F).
    FilterInvalid,
}

/// Why an unsubscription did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnsubResult {
    Success,
    /// 0x11.
    NoSubscription,
    /// 0x8F.
    FilterInvalid,
}

/// Why a PUBLISH is refused with an acknowledgement (MQTT 5 reason codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PubRefusal {
    /// 0x87.
    NotAuthorized,
    /// 0x90: a topic that is well formed but not taken here (a `$` topic).
    TopicNameInvalid,
}

/// A packet from a client, in either version.
pub(crate) enum In {
    Publish {
        msg: Message,
        pkid: u16,
        /// MQTT 5 Topic Alias (§3.3.2.3.4).
        alias: Option<u16>,
        /// The Message Expiry Interval, in seconds.
        expiry: Option<u32>,
    },
    PubAck(u16),
    /// PUBREC, and whether it accepted the message (reason below 0x80).
    PubRec(u16, bool),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<SubRequest>,
        /// MQTT 5 Subscription Identifier (§3.8.2.1.2).
        id: Option<usize>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect {
        with_will: bool,
        /// MQTT 5 Session Expiry Interval set at DISCONNECT (§3.14.2.2.2), in seconds.
        session_expiry: Option<u32>,
    },
    /// A packet whose remaining length (bytes) is over the limit; not read.
    TooLarge(usize),
    Unexpected(&'static str),
}

/// A packet to a client, other than PUBLISH.
#[derive(Debug)]
pub(crate) enum Reply {
    /// `None` when the message was accepted.
    PubAck(u16, Option<PubRefusal>),
    PubRec(u16, Option<PubRefusal>),
    PubRel(u16),
    /// `false`: the packet id was not awaiting a PUBREL (MQTT 5: 0x92).
    PubComp(u16, bool),
    /// The granted QoS per filter, or why it was refused.
    SubAck(u16, Vec<Result<QoS, SubRefusal>>),
    UnsubAck(u16, Vec<UnsubResult>),
    PingResp,
}

/// Why the broker ends an MQTT 5 connection (DISCONNECT's reason).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Goodbye {
    /// 0x95.
    PacketTooLarge,
    /// 0x80: what the client sent could not be stored.
    UnspecifiedError,
    /// 0x81.
    Malformed,
    /// 0x82.
    ProtocolError,
    /// 0x8B.
    ShuttingDown,
    /// 0x8D.
    KeepAlive,
    /// 0x8E.
    TakenOver,
    /// 0x87: the client's rights were revoked.
    NotAuthorized,
    /// 0x94.
    TopicAlias,
    /// 0x93.
    ReceiveMaximum,
}

/// The Topic Alias Maximum announced to MQTT 5 clients (§3.2.2.3.8).
pub(crate) const TOPIC_ALIAS_MAX: u16 = 64;

fn qos_in(q: u8) -> QoS {
    QoS::from_u8(q).unwrap_or(QoS::ExactlyOnce)
}

fn v4_qos(q: QoS) -> rumqttc::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

fn v5_qos(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn expires(now: SystemTime, seconds: Option<u32>) -> Option<SystemTime> {
    seconds.map(|s| now + Duration::from_secs(u64::from(s)))
}

/// Length of the fixed header and the remaining length, once enough bytes are there.
fn fixed_header(buf: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for (i, b) in buf.iter().skip(1).take(4).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((i + 2, len));
        }
    }
    None
}

async fn fill_buf<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> Result<(), ConnError> {
    buf.reserve(4096);
    let read = rd.read_buf(buf).await.map_err(ConnError::Io)?;
    if read == 0 {
        return Err(ConnError::Eof);
    }
    Ok(())
}

/// Reads CONNECT in whichever version the client speaks (the protocol level is the 7th byte
/// of the variable header: 0, 4, "MQTT", level).
pub(crate) async fn read_connect<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<ConnectInfo, ConnError> {
    let not_connect = ConnError::Unexpected("the first packet is not CONNECT");
    let level = loop {
        if let Some((header, _)) = fixed_header(buf) {
            if buf[0] >> 4 != 1 {
                return Err(not_connect);
            }
            if let Some(level) = buf.get(header + 6) {
                break *level;
            }
        } else if buf.len() >= 5 {
            return Err(ConnError::Length);
        }
        fill_buf(rd, buf).await?;
    };
    if level == 5 {
        let packet = loop {
            match v5::Packet::read(buf, Some(max as u32)) {
                Ok(p) => break p,
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {
                    fill_buf(rd, buf).await?
                }
                Err(e) => return Err(ConnError::Malformed5(e)),
            }
        };
        let v5::Packet::Connect(c, will, login) = packet else {
            return Err(not_connect);
        };
        let props = c.properties.unwrap_or_else(v5::ConnectProperties::new);
        let mut will_delay = Duration::ZERO;
        let will = match will {
            Some(w) => {
                let p = w.properties.unwrap_or(v5::LastWillProperties {
                    delay_interval: None,
                    payload_format_indicator: None,
                    message_expiry_interval: None,
                    content_type: None,
                    response_topic: None,
                    correlation_data: None,
                    user_properties: Vec::new(),
                });
                will_delay = Duration::from_secs(u64::from(p.delay_interval.unwrap_or(0)));
                Some(Message {
                    topic: String::from_utf8(w.topic.to_vec()).map_err(ConnError::TopicNotUtf8)?,
                    payload: w.message,
                    qos: qos_in(w.qos as u8),
                    retain: w.retain,
                    properties: p.user_properties,
                    v5: PublishProperties {
                        payload_format_indicator: p.payload_format_indicator,
                        content_type: p.content_type,
                        response_topic: p.response_topic,
                        correlation_data: p.correlation_data,
                    },
                    // From when it is published (§3.1.3.2.4); set then.
                    expires_at: None,
                })
                .map(|m| (m, p.message_expiry_interval))
            }
            None => None,
        };
        let (will, will_expiry) = match will {
            Some((m, e)) => (Some(m), e),
            None => (None, None),
        };
        return Ok(ConnectInfo {
            version: Version::V5,
            client_id: c.client_id,
            username: login.as_ref().map(|l| l.username.clone()),
            password: login.map(|l| l.password),
            keep_alive: c.keep_alive,
            persistent: props.session_expiry_interval.unwrap_or(0) > 0,
            resume: !c.clean_start,
            // 0xFFFFFFFF means never.
            expiry: match props.session_expiry_interval {
                Some(u32::MAX) => None,
                s => Some(Duration::from_secs(u64::from(s.unwrap_or(0)))),
            },
            will,
            will_expiry,
            will_delay,
            receive_max: usize::from(props.receive_maximum.unwrap_or(u16::MAX)),
            max_packet: props.max_packet_size.map_or(usize::MAX, |m| m as usize),
            topic_alias_max: props.topic_alias_max.unwrap_or(0),
            auth_method: props.authentication_method,
        });
    }
    let packet = loop {
        match v4::Packet::read(buf, max) {
            Ok(p) => break p,
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => fill_buf(rd, buf).await?,
            Err(rumqttc::mqttbytes::Error::InvalidProtocolLevel(_)) => {
                return Err(ConnError::Level(level));
            }
            Err(e) => return Err(ConnError::Malformed4(e)),
        }
    };
    let v4::Packet::Connect(c) = packet else {
        return Err(not_connect);
    };
    Ok(ConnectInfo {
        version: Version::V4,
        client_id: c.client_id,
        username: c.login.as_ref().map(|l| l.username.clone()),
        password: c.login.map(|l| l.password),
        keep_alive: c.keep_alive,
        persistent: !c.clean_session,
        resume: !c.clean_session,
        expiry: None,
        will: c
            .last_will
            .map(|w| Message::new(w.topic, w.message, qos_in(w.qos as u8), w.retain)),
        will_expiry: None,
        will_delay: Duration::ZERO,
        receive_max: INFLIGHT_LIMIT,
        max_packet: usize::MAX,
        topic_alias_max: 0,
        auth_method: None,
    })
}

/// Reads the next packet (cancel-safe: what was read stays in `buf`).
pub(crate) async fn read_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    version: Version,
    max: usize,
) -> Result<In, ConnError> {
    loop {
        let parsed = match version {
            Version::V4 => match v4::Packet::read(buf, max) {
                Ok(p) => Some(Ok(v4_in(p))),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => None,
                Err(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
                    Some(Ok(In::TooLarge(size)))
                }
                Err(e) => Some(Err(ConnError::Malformed4(e))),
            },
            Version::V5 => {
                // rumqttc's v5 reader refuses a DISCONNECT without a body (reason 0, as most
                // clients send it).
                if buf.len() >= 2 && buf[0] == 0xE0 && buf[1] == 0 {
                    let _ = buf.split_to(2);
                    return Ok(In::Disconnect {
                        with_will: false,
                        session_expiry: None,
                    });
                }
                match v5::Packet::read(buf, Some(max as u32)) {
                    Ok(p) => Some(v5_in(p)),
                    Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => None,
                    Err(rumqttc::v5::mqttbytes::Error::PayloadSizeLimitExceeded {
                        pkt_size,
                        ..
                    }) => Some(Ok(In::TooLarge(pkt_size))),
                    Err(e) => Some(Err(ConnError::Malformed5(e))),
                }
            }
        };
        match parsed {
            Some(r) => return r,
            None => fill_buf(rd, buf).await?,
        }
    }
}

fn v4_in(p: v4::Packet) -> In {
    match p {
        v4::Packet::Publish(p) => In::Publish {
            pkid: p.pkid,
            alias: None,
            expiry: None,
            msg: Message::new(p.topic, p.payload, qos_in(p.qos as u8), p.retain),
        },
        v4::Packet::PubAck(a) => In::PubAck(a.pkid),
        v4::Packet::PubRec(r) => In::PubRec(r.pkid, true),
        v4::Packet::PubRel(r) => In::PubRel(r.pkid),
        v4::Packet::PubComp(c) => In::PubComp(c.pkid),
        v4::Packet::Subscribe(s) => In::Subscribe {
            pkid: s.pkid,
            id: None,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubRequest {
                    filter: f.path,
                    qos: qos_in(f.qos as u8),
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                })
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => In::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => In::PingReq,
        v4::Packet::Disconnect => In::Disconnect {
            with_will: false,
            session_expiry: None,
        },
        v4::Packet::Connect(_) => In::Unexpected("a second CONNECT"),
        _ => In::Unexpected("from the server side"),
    }
}

fn v5_in(p: v5::Packet) -> Result<In, ConnError> {
    Ok(match p {
        v5::Packet::Publish(p) => {
            let props = p.properties.unwrap_or_default();
            In::Publish {
                pkid: p.pkid,
                alias: props.topic_alias,
                expiry: props.message_expiry_interval,
                msg: Message {
                    topic: String::from_utf8(p.topic.to_vec()).map_err(ConnError::TopicNotUtf8)?,
                    payload: p.payload,
                    qos: qos_in(p.qos as u8),
                    retain: p.retain,
                    properties: props.user_properties,
                    v5: PublishProperties {
                        payload_format_indicator: props.payload_format_indicator,
                        content_type: props.content_type,
                        response_topic: props.response_topic,
                        correlation_data: props.correlation_data,
                    },
                    expires_at: None,
                },
            }
        }
        v5::Packet::PubAck(a) => In::PubAck(a.pkid),
        v5::Packet::PubRec(r) => In::PubRec(
            r.pkid,
            matches!(
                r.reason,
                v5::PubRecReason::Success | v5::PubRecReason::NoMatchingSubscribers
            ),
        ),
        v5::Packet::PubRel(r) => In::PubRel(r.pkid),
        v5::Packet::PubComp(c) => In::PubComp(c.pkid),
        v5::Packet::Subscribe(s) => In::Subscribe {
            pkid: s.pkid,
            id: s.properties.and_then(|p| p.id),
            filters: s
                .filters
                .into_iter()
                .map(|f| SubRequest {
                    filter: f.path,
                    qos: qos_in(f.qos as u8),
                    no_local: f.nolocal,
                    retain_as_published: f.preserve_retain,
                    retain_handling: match f.retain_forward_rule {
                        v5::RetainForwardRule::OnEverySubscribe => 0,
                        v5::RetainForwardRule::OnNewSubscribe => 1,
                        v5::RetainForwardRule::Never => 2,
                    },
                })
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => In::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => In::PingReq,
        v5::Packet::Disconnect(d) => In::Disconnect {
            with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
            session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
        },
        v5::Packet::Auth(_) => In::Unexpected("AUTH (enhanced authentication is not supported)"),
        v5::Packet::Connect(..) => In::Unexpected("a second CONNECT"),
        _ => In::Unexpected("from the server side"),
    })
}

/// What a CONNACK tells an accepted MQTT 5 client besides the session.
#[derive(Debug, Default)]
pub(crate) struct Accepted {
    /// The client id the broker gave a client that sent an empty one (§3.2.2.3.7).
    pub(crate) assigned_client_id: Option<String>,
    /// The session expiry interval the broker applies when it is not the one asked
    /// (§3.2.2.3.2), in seconds.
    pub(crate) session_expiry: Option<u32>,
    /// The keep alive the broker holds the client to when it is not the one asked
    /// (§3.2.2.3.14), in seconds.
    pub(crate) server_keep_alive: Option<u16>,
}

/// CONNACK: accepted, or refused for a reason. MQTT 5 ones announce this broker's limits
/// (`max_in`: Maximum Packet Size) and features.
pub(crate) fn connack(
    version: Version,
    refusal: Option<Refusal>,
    present: bool,
    max_in: usize,
    accepted: Accepted,
) -> Result<BytesMut, ConnError> {
    let mut out = BytesMut::new();
    match version {
        Version::V4 => {
            use v4::ConnectReturnCode as C;
            let code = match refusal {
                None => C::Success,
                Some(Refusal::Credentials) => C::BadUserNamePassword,
                Some(Refusal::ClientId) => C::BadClientId,
                Some(Refusal::Unavailable | Refusal::AuthMethod) => C::ServiceUnavailable,
                Some(Refusal::Version) => C::RefusedProtocolVersion,
            };
            v4::Packet::ConnAck(v4::ConnAck::new(code, present))
                .write(&mut out, usize::MAX)
                .map_err(ConnError::Encode4)?;
        }
        Version::V5 => {
            use v5::ConnectReturnCode as C;
            let code = match refusal {
                None => C::Success,
                Some(Refusal::Credentials) => C::BadUserNamePassword,
                Some(Refusal::ClientId) => C::ClientIdentifierNotValid,
                Some(Refusal::Unavailable) => C::ServerUnavailable,
                Some(Refusal::AuthMethod) => C::BadAuthenticationMethod,
                Some(Refusal::Version) => C::UnsupportedProtocolVersion,
            };
            let properties = v5::ConnAckProperties {
                session_expiry_interval: accepted.session_expiry,
                receive_max: Some(INFLIGHT_LIMIT as u16),
                // QoS 2 is supported: no Maximum QoS (§3.2.2.3.4).
                max_qos: None,
                retain_available: None,
                max_packet_size: Some(u32::try_from(max_in).unwrap_or(u32::MAX)),
                assigned_client_identifier: accepted.assigned_client_id,
                topic_alias_max: Some(TOPIC_ALIAS_MAX),
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: None,
                subscription_identifiers_available: None,
                shared_subscription_available: None,
                server_keep_alive: accepted.server_keep_alive,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            };
            v5::Packet::ConnAck(v5::ConnAck {
                session_present: present,
                code,
                properties: (refusal.is_none()).then_some(properties),
            })
            .write(&mut out, None)
            .map_err(ConnError::Encode5)?;
        }
    }
    Ok(out)
}

/// An MQTT 5 DISCONNECT from the broker, with a reason string.
pub(crate) fn disconnect(reason: Goodbye, why: String) -> Result<BytesMut, ConnError> {
    use v5::DisconnectReasonCode as D;
    let mut out = BytesMut::new();
    v5::Packet::Disconnect(v5::Disconnect {
        reason_code: match reason {
            Goodbye::PacketTooLarge => D::PacketTooLarge,
            Goodbye::UnspecifiedError => D::UnspecifiedError,
            Goodbye::Malformed => D::MalformedPacket,
            Goodbye::ProtocolError => D::ProtocolError,
            Goodbye::ShuttingDown => D::ServerShuttingDown,
            Goodbye::KeepAlive => D::KeepAliveTimeout,
            Goodbye::TakenOver => D::SessionTakenOver,
            Goodbye::NotAuthorized => D::NotAuthorized,
            Goodbye::TopicAlias => D::TopicAliasInvalid,
            Goodbye::ReceiveMaximum => D::ReceiveMaximumExceeded,
        },
        properties: Some(v5::DisconnectProperties {
            session_expiry_interval: None,
            reason_string: Some(why),
            user_properties: Vec::new(),
            server_reference: None,
        }),
    })
    .write(&mut out, None)
    .map_err(ConnError::Encode5)?;
    Ok(out)
}

/// A reply (any packet but PUBLISH and CONNACK).
pub(crate) fn reply(version: Version, reply: Reply) -> Result<BytesMut, ConnError> {
    let mut out = BytesMut::new();
    match version {
        Version::V4 => {
            let p = match reply {
                // MQTT 3.1.1 has no negative acknowledgement: a refused message is acknowledged
                // and dropped (§3.3.5, [MQTT-3.3.5-2]).
                Reply::PubAck(id, _) => v4::Packet::PubAck(v4::PubAck::new(id)),
                Reply::PubRec(id, _) => v4::Packet::PubRec(v4::PubRec::new(id)),
                Reply::PubRel(id) => v4::Packet::PubRel(v4::PubRel::new(id)),
                Reply::PubComp(id, _) => v4::Packet::PubComp(v4::PubComp::new(id)),
                Reply::SubAck(id, codes) => v4::Packet::SubAck(v4::SubAck::new(
                    id,
                    codes
                        .into_iter()
                        .map(|c| match c {
                            Ok(q) => v4::SubscribeReasonCode::Success(v4_qos(q)),
                            Err(_) => v4::SubscribeReasonCode::Failure,
                        })
                        .collect(),
                )),
                Reply::UnsubAck(id, _) => v4::Packet::UnsubAck(v4::UnsubAck::new(id)),
                Reply::PingResp => v4::Packet::PingResp,
            };
            p.write(&mut out, usize::MAX).map_err(ConnError::Encode4)?;
        }
        Version::V5 => {
            let p = match reply {
                Reply::PubAck(pkid, refused) => v5::Packet::PubAck(v5::PubAck {
                    pkid,
                    reason: match refused {
                        None => v5::PubAckReason::Success,
                        Some(PubRefusal::NotAuthorized) => v5::PubAckReason::NotAuthorized,
                        Some(PubRefusal::TopicNameInvalid) => v5::PubAckReason::TopicNameInvalid,
                    },
                    properties: None,
                }),
                Reply::PubRec(pkid, refused) => v5::Packet::PubRec(v5::PubRec {
                    pkid,
                    reason: match refused {
                        None => v5::PubRecReason::Success,
                        Some(PubRefusal::NotAuthorized) => v5::PubRecReason::NotAuthorized,
                        Some(PubRefusal::TopicNameInvalid) => v5::PubRecReason::TopicNameInvalid,
                    },
                    properties: None,
                }),
                Reply::PubRel(pkid) => v5::Packet::PubRel(v5::PubRel::new(pkid, None)),
                Reply::PubComp(pkid, found) => v5::Packet::PubComp(v5::PubComp {
                    pkid,
                    reason: if found {
                        v5::PubCompReason::Success
                    } else {
                        v5::PubCompReason::PacketIdentifierNotFound
                    },
                    properties: None,
                }),
                Reply::SubAck(pkid, codes) => v5::Packet::SubAck(v5::SubAck {
                    pkid,
                    return_codes: codes
                        .into_iter()
                        .map(|c| match c {
                            Ok(q) => v5::SubscribeReasonCode::Success(v5_qos(q)),
                            Err(SubRefusal::NotAuthorized) => {
                                v5::SubscribeReasonCode::NotAuthorized
                            }
                            Err(SubRefusal::FilterInvalid) => {
                                v5::SubscribeReasonCode::TopicFilterInvalid
                            }
                        })
                        .collect(),
                    properties: None,
                }),
                Reply::UnsubAck(pkid, results) => v5::Packet::UnsubAck(v5::UnsubAck {
                    pkid,
                    reasons: results
                        .into_iter()
                        .map(|r| match r {
                            UnsubResult::Success => v5::UnsubAckReason::Success,
                            UnsubResult::NoSubscription => {
                                v5::UnsubAckReason::NoSubscriptionExisted
                            }
                            UnsubResult::FilterInvalid => v5::UnsubAckReason::TopicFilterInvalid,
                        })
                        .collect(),
                    properties: None,
                }),
                Reply::PingResp => v5::Packet::PingResp(v5::PingResp),
            };
            p.write(&mut out, None).map_err(ConnError::Encode5)?;
        }
    }
    Ok(out)
}

/// A PUBLISH of `p` under packet id `pkid` (0 for QoS 0); MQTT 5 ones carry the message's
/// properties, the time it has left (`expiry`, seconds), the matching subscriptions'
/// identifiers and, with `alias`, a Topic Alias (`(alias, true)`: it is set here, with the
/// topic; `(alias, false)`: it stands for the topic, which is left empty).
pub(crate) fn publish(
    version: Version,
    p: &Out,
    pkid: u16,
    expiry: Option<u32>,
    alias: Option<(u16, bool)>,
) -> Result<BytesMut, ConnError> {
    let mut out = BytesMut::new();
    let m = &p.msg;
    match version {
        Version::V4 => v4::Packet::Publish(v4::Publish {
            dup: p.dup,
            qos: v4_qos(p.qos),
            retain: p.retain,
            topic: m.topic.clone(),
            pkid,
            payload: m.payload.clone(),
        })
        .write(&mut out, usize::MAX)
        .map_err(ConnError::Encode4)?,
        Version::V5 => {
            let has_props = !m.properties.is_empty()
                || m.v5 != PublishProperties::default()
                || expiry.is_some()
                || !p.sub_ids.is_empty()
                || alias.is_some();
            let topic = match alias {
                Some((_, false)) => Bytes::new(),
                _ => Bytes::copy_from_slice(m.topic.as_bytes()),
            };
            v5::Packet::Publish(v5::Publish {
                dup: p.dup,
                qos: v5_qos(p.qos),
                retain: p.retain,
                topic,
                pkid,
                payload: m.payload.clone(),
                properties: has_props.then(|| v5::PublishProperties {
                    payload_format_indicator: m.v5.payload_format_indicator,
                    message_expiry_interval: expiry,
                    topic_alias: alias.map(|(a, _)| a),
                    response_topic: m.v5.response_topic.clone(),
                    correlation_data: m.v5.correlation_data.clone(),
                    user_properties: m.properties.clone(),
                    subscription_identifiers: p.sub_ids.clone(),
                    content_type: m.v5.content_type.clone(),
                }),
            })
            .write(&mut out, None)
            .map_err(ConnError::Encode5)?
        }
    };
    Ok(out)
}

/// Sets a message's expiry from its interval, counted from `now`.
pub(crate) fn set_expiry(msg: &mut Message, now: SystemTime, seconds: Option<u32>) {
    msg.expires_at = expires(now, seconds);
}
