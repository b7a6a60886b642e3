#!/usr/bin/env python3
"""Writes the fuzzers' starting inputs into corpus/<target>/ (docs/fuzzing.md).

Python's standard library only, so it runs anywhere. Token inputs follow the layout of
src/tokens.rs: a mode byte (0 raw token, 1 header NUL claims signed with the verifier's
key, 2 the same signed with a foreign key), then the rest. Keys and the clock are the ones
src/tokens.rs uses, so the valid seeds verify and the fuzzer starts past the signature.
"""
import base64, hashlib, hmac, json, os, pathlib

HERE = pathlib.Path(__file__).resolve().parent.parent
NOW = 1_795_338_000  # 2026-11-22T09:00:00Z, tokens::NOW
SECRET, ROTATED, RESUME = (b"clinic-a-secret-0123456789", b"clinic-a-rotated-secret-xyz",
                           b"bedside-resume-secret-0123456789")
PID = "p_00000000000000ff"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(header: dict, claims: dict, secret: bytes) -> str:
    msg = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    sig = hmac.new(secret, msg.encode(), hashlib.sha256).digest()
    return msg + "." + b64(sig)


def write(target: str, seeds: list) -> None:
    out = HERE / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        data = seed if isinstance(seed, bytes) else seed.encode()
        (out / hashlib.sha1(data).hexdigest()).write_bytes(data)


frames = [
    {"type": "join", "token": "eyJ.eyJ.sig"},
    {"type": "join", "resume_token": "eyJ.eyJ.sig"},
    {"type": "signal", "to": PID, "data": {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}},
    {"type": "signal", "to": PID, "data": {"candidate": "candidate:1 1 udp 2122260223 10.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}},
    {"type": "signal", "to": PID, "data": [1, -2.5e-3, True, None, "\u00e9\ud83d\ude00", {"a": []}]},
    {"type": "admit", "participant_id": PID},
    {"type": "deny", "participant_id": PID, "reason": "not today"},
    {"type": "remove", "participant_id": PID},
    {"type": "chat", "text": "hello \u2028 there"},
    {"type": "media", "audio": True, "video": False, "screen": True},
    {"type": "leave"}, {"type": "end_visit"}, {"type": "ping", "extra": {"ignored": 1}},
]
write("decode_client_frame", [json.dumps(f) for f in frames] + [
    '{"type":"signal","to":"%s","data":%s1%s}' % (PID, "[" * 33, "]" * 33),
    '{"type":"signal","to":"%s","data":{"s":"[\\"{\\\\"}}' % PID,
    '{"type" : "chat" , "text" : "\\ud83d\\ude00\\n\\u0000" }',
    '{"type":"shout"}', '[1,2]', '{"type":5}', 'not json',
])

t = NOW
claims = {"iss": "clinic-a", "sub": "patient-7", "visit": "5d0c6a1e-8f43-4ad8-9d4e-1f2a3b4c5d6e",
          "role": "patient", "name": "Ada", "iat": t, "nbf": t, "exp": t + 3600, "jti": "j-1"}
hdr = {"alg": "HS256", "typ": "JWT", "kid": "clinic-a"}
rotated = dict(claims, iss="clinic-a-2027", role="doctor", name=" Dr\nLee\u0007 ")
join = [
    b"\0" + jwt(hdr, claims, SECRET).encode(),
    b"\0" + jwt(dict(hdr, kid="clinic-a-2027"), rotated, ROTATED).encode(),
    b"\0" + jwt(hdr, dict(claims, exp=t - 60), SECRET).encode(),
    b"\0" + jwt(dict(hdr, alg="none"), claims, SECRET).encode(),
    b"\1" + json.dumps(hdr).encode() + b"\0" + json.dumps(claims).encode(),
    b"\1" + json.dumps(dict(claims, nbf=t + 5, exp=t + 31 * 86400)).encode(),
    b"\2" + json.dumps(claims).encode(),
]
write("verify_join", join)

rc = {"aud": "bedside:resume", "tenant": "clinic-a", "visit": claims["visit"], "sub": "patient-7",
      "role": "patient", "name": "Ada", "iat": t, "exp": t + 12 * 3600}
write("verify_resume", [
    b"\0" + jwt({"alg": "HS256", "typ": "JWT"}, rc, RESUME).encode(),
    b"\0" + jwt({"alg": "HS256", "typ": "JWT"}, rc, SECRET).encode(),
    b"\1" + json.dumps(rc).encode(),
    b"\1" + json.dumps({"alg": "HS256", "kid": "clinic-a"}).encode() + b"\0" + json.dumps(dict(rc, aud="x")).encode(),
    b"\2" + json.dumps(rc).encode(),
])
