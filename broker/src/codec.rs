//! MQTT 3.1.1 and 5 on the wire, through rumqttc's packet codecs: packets read into the
//! broker's version-neutral [`In`], and the broker's replies encoded in the client's version.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::ConnError;
use crate::message::{Message, Out, QoS};
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
    pub(crate) receive_max: usize,
    pub(crate) max_packet: usize,
}

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    Credentials,
    ClientId,
    /// The session could not be stored.
    Unavailable,
}

/// A packet from a client, in either version.
pub(crate) enum In {
    Publish {
        msg: Message,
        pkid: u16,
        qos2: bool,
    },
    PubAck(u16),
    PubRel(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, QoS)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect {
        with_will: bool,
    },
    /// A packet with nothing to do (a PUBREC/PUBCOMP: the broker never sends QoS 2).
    Ignored,
    /// A packet whose remaining length (bytes) is over the limit; not read.
    TooLarge(usize),
    Unexpected(&'static str),
}

/// A packet to a client, other than PUBLISH.
#[derive(Debug)]
pub(crate) enum Reply {
    /// `true` when the message was accepted.
    PubAck(u16, bool),
    PubRec(u16, bool),
    PubComp(u16),
    /// The granted QoS per filter, `None` when refused.
    SubAck(u16, Vec<Option<QoS>>),
    UnsubAck(u16, usize),
    PingResp,
}

/// Why the broker ends an MQTT 5 connection (DISCONNECT's reason).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Goodbye {
    /// 0x95.
    PacketTooLarge,
    /// 0x80: what the client sent could not be stored.
    UnspecifiedError,
}

fn qos_in(q: u8) -> QoS {
    if q == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

fn v4_qos(q: QoS) -> rumqttc::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
    }
}

fn v5_qos(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    }
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
        let will = match will {
            Some(w) => Some(Message {
                topic: String::from_utf8(w.topic.to_vec()).map_err(ConnError::TopicNotUtf8)?,
                payload: w.message,
                qos: qos_in(w.qos as u8),
                retain: w.retain,
                properties: w.properties.map(|p| p.user_properties).unwrap_or_default(),
            }),
            None => None,
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
            receive_max: usize::from(props.receive_maximum.unwrap_or(u16::MAX)),
            max_packet: props.max_packet_size.map_or(usize::MAX, |m| m as usize),
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
        will: c.last_will.map(|w| Message {
            topic: w.topic,
            payload: w.message,
            qos: qos_in(w.qos as u8),
            retain: w.retain,
            properties: Vec::new(),
        }),
        receive_max: INFLIGHT_LIMIT,
        max_packet: usize::MAX,
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
                    return Ok(In::Disconnect { with_will: false });
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
            qos2: p.qos == rumqttc::mqttbytes::QoS::ExactlyOnce,
            pkid: p.pkid,
            msg: Message {
                topic: p.topic,
                payload: p.payload,
                qos: qos_in(p.qos as u8),
                retain: p.retain,
                properties: Vec::new(),
            },
        },
        v4::Packet::PubAck(a) => In::PubAck(a.pkid),
        v4::Packet::PubRel(r) => In::PubRel(r.pkid),
        v4::Packet::PubRec(_) | v4::Packet::PubComp(_) => In::Ignored,
        v4::Packet::Subscribe(s) => In::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos_in(f.qos as u8)))
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => In::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => In::PingReq,
        v4::Packet::Disconnect => In::Disconnect { with_will: false },
        v4::Packet::Connect(_) => In::Unexpected("a second CONNECT"),
        _ => In::Unexpected("from the server side"),
    }
}

fn v5_in(p: v5::Packet) -> Result<In, ConnError> {
    Ok(match p {
        v5::Packet::Publish(p) => {
            let props = p.properties.unwrap_or_default();
            if props.topic_alias.is_some() {
                return Err(ConnError::Unexpected(
                    "a topic alias (this broker allows none)",
                ));
            }
            In::Publish {
                qos2: p.qos == rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
                pkid: p.pkid,
                msg: Message {
                    topic: String::from_utf8(p.topic.to_vec()).map_err(ConnError::TopicNotUtf8)?,
                    payload: p.payload,
                    qos: qos_in(p.qos as u8),
                    retain: p.retain,
                    properties: props.user_properties,
                },
            }
        }
        v5::Packet::PubAck(a) => In::PubAck(a.pkid),
        v5::Packet::PubRel(r) => In::PubRel(r.pkid),
        v5::Packet::PubRec(_) | v5::Packet::PubComp(_) => In::Ignored,
        v5::Packet::Subscribe(s) => In::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos_in(f.qos as u8)))
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => In::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => In::PingReq,
        v5::Packet::Disconnect(d) => In::Disconnect {
            with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
        },
        v5::Packet::Auth(_) => In::Unexpected("AUTH (enhanced authentication is not supported)"),
        v5::Packet::Connect(..) => In::Unexpected("a second CONNECT"),
        _ => In::Unexpected("from the server side"),
    })
}

/// CONNACK: accepted, or refused for a reason. MQTT 5 ones announce this broker's limits
/// (`max_in`: Maximum Packet Size).
pub(crate) fn connack(
    version: Version,
    refusal: Option<Refusal>,
    present: bool,
    max_in: usize,
) -> Result<BytesMut, ConnError> {
    let mut out = BytesMut::new();
    match version {
        Version::V4 => {
            use v4::ConnectReturnCode as C;
            let code = match refusal {
                None => C::Success,
                Some(Refusal::Credentials) => C::BadUserNamePassword,
                Some(Refusal::ClientId) => C::BadClientId,
                Some(Refusal::Unavailable) => C::ServiceUnavailable,
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
            };
            let properties = v5::ConnAckProperties {
                session_expiry_interval: None,
                receive_max: Some(INFLIGHT_LIMIT as u16),
                max_qos: Some(1),
                retain_available: None,
                max_packet_size: Some(u32::try_from(max_in).unwrap_or(u32::MAX)),
                assigned_client_identifier: None,
                topic_alias_max: None,
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: None,
                subscription_identifiers_available: Some(0),
                shared_subscription_available: Some(0),
                server_keep_alive: None,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            };
            v5::Packet::ConnAck(v5::ConnAck {
                session_present: present,
                code,
                properties: Some(properties),
            })
            .write(&mut out, None)
            .map_err(ConnError::Encode5)?;
        }
    }
    Ok(out)
}

/// An MQTT 5 DISCONNECT from the broker, with a reason string.
pub(crate) fn disconnect(reason: Goodbye, why: String) -> Result<BytesMut, ConnError> {
    let mut out = BytesMut::new();
    v5::Packet::Disconnect(v5::Disconnect {
        reason_code: match reason {
            Goodbye::PacketTooLarge => v5::DisconnectReasonCode::PacketTooLarge,
            Goodbye::UnspecifiedError => v5::DisconnectReasonCode::UnspecifiedError,
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
                Reply::PubAck(id, _) => v4::Packet::PubAck(v4::PubAck::new(id)),
                Reply::PubRec(id, _) => v4::Packet::PubRec(v4::PubRec::new(id)),
                Reply::PubComp(id) => v4::Packet::PubComp(v4::PubComp::new(id)),
                Reply::SubAck(id, codes) => v4::Packet::SubAck(v4::SubAck::new(
                    id,
                    codes
                        .into_iter()
                        .map(|c| match c {
                            Some(q) => v4::SubscribeReasonCode::Success(v4_qos(q)),
                            None => v4::SubscribeReasonCode::Failure,
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
                Reply::PubAck(pkid, ok) => v5::Packet::PubAck(v5::PubAck {
                    pkid,
                    reason: if ok {
                        v5::PubAckReason::Success
                    } else {
                        v5::PubAckReason::NotAuthorized
                    },
                    properties: None,
                }),
                Reply::PubRec(pkid, ok) => v5::Packet::PubRec(v5::PubRec {
                    pkid,
                    reason: if ok {
                        v5::PubRecReason::Success
                    } else {
                        v5::PubRecReason::NotAuthorized
                    },
                    properties: None,
                }),
                Reply::PubComp(pkid) => v5::Packet::PubComp(v5::PubComp::new(pkid, None)),
                Reply::SubAck(pkid, codes) => v5::Packet::SubAck(v5::SubAck {
                    pkid,
                    return_codes: codes
                        .into_iter()
                        .map(|c| match c {
                            Some(q) => v5::SubscribeReasonCode::Success(v5_qos(q)),
                            None => v5::SubscribeReasonCode::NotAuthorized,
                        })
                        .collect(),
                    properties: None,
                }),
                Reply::UnsubAck(pkid, n) => v5::Packet::UnsubAck(v5::UnsubAck {
                    pkid,
                    reasons: vec![v5::UnsubAckReason::Success; n],
                    properties: None,
                }),
                Reply::PingResp => v5::Packet::PingResp(v5::PingResp),
            };
            p.write(&mut out, None).map_err(ConnError::Encode5)?;
        }
    }
    Ok(out)
}

/// A PUBLISH of `p` under packet id `pkid` (0 for QoS 0).
pub(crate) fn publish(version: Version, p: &Out, pkid: u16) -> Result<BytesMut, ConnError> {
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
        Version::V5 => v5::Packet::Publish(v5::Publish {
            dup: p.dup,
            qos: v5_qos(p.qos),
            retain: p.retain,
            topic: Bytes::copy_from_slice(m.topic.as_bytes()),
            pkid,
            payload: m.payload.clone(),
            properties: (!m.properties.is_empty()).then(|| v5::PublishProperties {
                user_properties: m.properties.clone(),
                ..Default::default()
            }),
        })
        .write(&mut out, None)
        .map_err(ConnError::Encode5)?,
    };
    Ok(out)
}
