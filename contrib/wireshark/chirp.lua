-- chirp.lua: a Wireshark dissector for chirp's wire format, version 2 (docs/PROTOCOL.md).
--
-- Use:
--   wireshark -X lua_script:contrib/wireshark/chirp.lua capture.pcap
--   tshark -X lua_script:contrib/wireshark/chirp.lua -r capture.pcap -Y chirp
--   tshark -X lua_script:contrib/wireshark/chirp.lua -r capture.pcap -T fields \
--       -e frame.number -e chirp.type -e chirp.dcid -e chirp.scid -e chirp.pn
-- or copy this file into Wireshark's personal Lua plugins folder (Help > About > Folders).
--
-- What is visible on the wire, and shown here (PROTOCOL.md §2.1, §2.2: chirp has no header
-- protection): the version, the packet type (hence the key phase of DATA), the connection IDs,
-- the packet number, the token of INITIAL and RETRY, the reason code of REFUSE, the token of
-- RESET, and the length of the encrypted frames and their 16-byte tag.
--
-- What is encrypted: the frames of every packet. Those of INITIAL, HANDSHAKE and ACCEPT are
-- sealed under keys anyone can derive from the client's initial destination ID (§2.2); this
-- dissector derives them (BLAKE2s), checks the tag (Poly1305) and shows the frames (HANDSHAKE,
-- ACK, PADDING, ...), as Wireshark does for QUIC Initial packets. The tags of RETRY and REFUSE
-- are checked the same way. DATA packets are sealed under the keys of the Noise handshake,
-- which never travel: their frames (messages, acknowledgements) cannot be read.
--
-- Where chirp runs: UDP port 7667 (the server's default), any port listed in the preference
-- "chirp.udp_ports", and any UDP conversation whose first datagram the heuristic recognises as
-- a client INITIAL (1200 bytes, a well-formed header and a tag that verifies under the public
-- initial key: nothing else passes). Ports listed in "chirp.plain_ports" carry
-- `chirp peer --plain` traffic instead: one datagram per line of text, no header at all.
--   tshark -X lua_script:chirp.lua -o chirp.udp_ports:5001-5002 -o chirp.plain_ports:6000 ...
--
-- Segmentation offload: chirp sends runs of equal-size datagrams to one destination as one
-- GSO "super-datagram" where the kernel supports it, and a capture on the sending host (on
-- `lo`, always) sees that one large UDP payload, which the kernel splits into the datagrams
-- the receiver gets only afterwards. The segment size is not in the packet, so this dissector
-- finds it (every segment after the first starts with version 2, a type byte and the same
-- destination ID, at a multiple of the first's size) and shows each datagram separately.
--
-- Malformed or cut datagrams are flagged with expert info (filter: chirp.malformed, chirp.cut),
-- never a Lua error: every read is bounds-checked against what was captured.
--
-- Written for Wireshark 4.0 and later (Lua 5.2 to 5.4): bit operations use the `bit` (BitOp)
-- library that every Wireshark with Lua provides.

local chirp = Proto("chirp", "chirp (chat over raw UDP)")

-- ---------------------------------------------------------------------------------------------
-- Constants (PROTOCOL.md §2.1, §8)
-- ---------------------------------------------------------------------------------------------

local VERSION = 0x02
local CID_LEN = 8
local TAG_LEN = 16
local RESET_LEN = 18 -- version, type, 16-byte token
local MIN_PACKET_LEN = 28 -- DATA: 2 + 8 + 1-byte packet number + one frame byte + 16
local MAX_DATAGRAM_SIZE = 1200
local INITIAL_SIZE = 1200 -- a client pads every INITIAL to exactly this
local MAX_TOKEN_LEN = 64
local DEFAULT_PORT = 7667

local T_INITIAL, T_HANDSHAKE, T_RETRY, T_DATA0, T_ACCEPT, T_DATA1, T_RESET, T_REFUSE =
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08

local TYPE_NAMES = {
    [T_INITIAL] = "INITIAL",
    [T_HANDSHAKE] = "HANDSHAKE",
    [T_RETRY] = "RETRY",
    [T_DATA0] = "DATA",
    [T_ACCEPT] = "ACCEPT",
    [T_DATA1] = "DATA",
    [T_RESET] = "RESET",
    [T_REFUSE] = "REFUSE",
}

local TYPE_VALS = {
    [T_INITIAL] = "INITIAL",
    [T_HANDSHAKE] = "HANDSHAKE",
    [T_RETRY] = "RETRY",
    [T_DATA0] = "DATA, key phase 0",
    [T_ACCEPT] = "ACCEPT",
    [T_DATA1] = "DATA, key phase 1",
    [T_RESET] = "RESET",
    [T_REFUSE] = "REFUSE",
}

-- Long-header packets carry the sender's connection ID as well as the receiver's.
local function is_long(ty)
    return ty == T_INITIAL or ty == T_HANDSHAKE or ty == T_RETRY or ty == T_ACCEPT
        or ty == T_REFUSE
end

local REFUSE_REASONS = { [1] = "SERVER_FULL" }

local FRAME_NAMES = {
    [0x00] = "PADDING",
    [0x01] = "PING",
    [0x02] = "ACK",
    [0x03] = "MESSAGE",
    [0x04] = "MAX_DATA",
    [0x05] = "CLOSE",
    [0x06] = "HANDSHAKE",
    [0x07] = "PATH_CHALLENGE",
    [0x08] = "PATH_RESPONSE",
    [0x09] = "RESET_TOKEN",
    [0x0a] = "FIN",
    [0x0b] = "RECEIVED",
    [0x0c] = "BULK",
    [0x0d] = "BULK_MAX_DATA",
}

local CLOSE_CODES = {
    [0x00] = "NO_ERROR",
    [0x01] = "PROTOCOL_VIOLATION",
    [0x02] = "FLOW_CONTROL",
    [0x03] = "MESSAGE_TOO_LARGE",
    [0x04] = "HANDSHAKE_FAILED",
    [0x05] = "KEY_MISMATCH",
}

-- ---------------------------------------------------------------------------------------------
-- Fields: every value shown has one, so `tshark -T fields -e chirp.X` and filters work.
-- ---------------------------------------------------------------------------------------------

local f = {
    version = ProtoField.uint8("chirp.version", "Version", base.HEX),
    type = ProtoField.uint8("chirp.type", "Packet type", base.HEX, TYPE_VALS),
    long = ProtoField.bool("chirp.long_header", "Long header"),
    key_phase = ProtoField.uint8("chirp.key_phase", "Key phase", base.DEC),
    dcid = ProtoField.uint64("chirp.dcid", "Destination connection ID", base.HEX),
    scid = ProtoField.uint64("chirp.scid", "Source connection ID", base.HEX),
    cid = ProtoField.uint64("chirp.cid", "Connection ID", base.HEX),
    token_len = ProtoField.uint64("chirp.token_len", "Token length", base.DEC),
    token = ProtoField.bytes("chirp.token", "Token"),
    pn = ProtoField.uint64("chirp.pn", "Packet number", base.DEC),
    pn_len = ProtoField.uint8("chirp.pn_len", "Packet number length", base.DEC),
    reason = ProtoField.uint64("chirp.refuse_reason", "Reason code", base.DEC),
    reset_token = ProtoField.bytes("chirp.reset_token", "Reset token"),
    payload = ProtoField.bytes("chirp.payload", "Encrypted frames"),
    payload_len = ProtoField.uint32("chirp.payload_len", "Encrypted frames length", base.DEC),
    tag = ProtoField.bytes("chirp.tag", "Authentication tag"),
    padded = ProtoField.bool("chirp.padded", "Padded to 1200 bytes"),
    initial_dcid = ProtoField.uint64("chirp.initial_dcid",
        "Initial destination connection ID (the attempt's key)", base.HEX),
    authentic = ProtoField.bool("chirp.authentic",
        "Tag verified under the attempt's public key"),
    datagram_len = ProtoField.uint32("chirp.datagram_len", "Datagram length", base.DEC),
    gso_segments = ProtoField.uint32("chirp.gso.segments",
        "Datagrams in this GSO super-datagram", base.DEC),
    gso_size = ProtoField.uint32("chirp.gso.segment_size", "GSO segment size", base.DEC),
    text = ProtoField.string("chirp.text", "Text (--plain)", base.UNICODE),
    text_len = ProtoField.uint32("chirp.text_len", "Text length", base.DEC),
    -- Frames, shown for the long-header packets this dissector can open.
    frame = ProtoField.uint8("chirp.frame", "Frame type", base.HEX, FRAME_NAMES),
    padding_len = ProtoField.uint32("chirp.padding_len", "PADDING bytes", base.DEC),
    ack_largest = ProtoField.uint64("chirp.ack.largest", "Largest acknowledged", base.DEC),
    ack_delay = ProtoField.uint64("chirp.ack.delay_us", "ACK delay (µs)", base.DEC),
    ack_count = ProtoField.uint64("chirp.ack.range_count", "ACK range count", base.DEC),
    ack_first = ProtoField.uint64("chirp.ack.first_range", "First ACK range", base.DEC),
    ack_gap = ProtoField.uint64("chirp.ack.gap", "Gap", base.DEC),
    ack_len = ProtoField.uint64("chirp.ack.range_len", "ACK range length", base.DEC),
    ack_ranges = ProtoField.string("chirp.ack.ranges", "Acknowledged packet numbers"),
    msg_offset = ProtoField.uint64("chirp.message.offset", "Offset", base.DEC),
    msg_len = ProtoField.uint64("chirp.message.length", "Length", base.DEC),
    msg_data = ProtoField.bytes("chirp.message.data", "Stream bytes"),
    max_data = ProtoField.uint64("chirp.max_data", "Limit", base.DEC),
    close_code = ProtoField.uint64("chirp.close.code", "Close code", base.DEC),
    close_reason_len = ProtoField.uint64("chirp.close.reason_len", "Reason length", base.DEC),
    close_reason = ProtoField.string("chirp.close.reason", "Reason", base.UNICODE),
    hs_len = ProtoField.uint64("chirp.handshake.length", "Noise message length", base.DEC),
    hs_msg = ProtoField.bytes("chirp.handshake.message", "Noise message"),
    hs_number = ProtoField.uint8("chirp.handshake.number", "Noise XX message", base.DEC),
    path_data = ProtoField.bytes("chirp.path.data", "Path data"),
    frame_reset_token = ProtoField.bytes("chirp.frame.reset_token", "Reset token"),
    fin = ProtoField.uint64("chirp.fin.final_offset", "Final offset", base.DEC),
    received = ProtoField.uint64("chirp.received.offset", "Received below", base.DEC),
    bulk_offset = ProtoField.uint64("chirp.bulk.offset", "Bulk offset", base.DEC),
    bulk_len = ProtoField.uint64("chirp.bulk.length", "Bulk length", base.DEC),
    bulk_data = ProtoField.bytes("chirp.bulk.data", "Bulk-channel bytes"),
    bulk_max_data = ProtoField.uint64("chirp.bulk_max_data", "Bulk limit", base.DEC),
}

local fields = {}
for _, field in pairs(f) do
    fields[#fields + 1] = field
end
chirp.fields = fields

local ex = {
    malformed = ProtoExpert.new("chirp.malformed", "Malformed chirp packet (a receiver drops it)",
        expert.group.MALFORMED, expert.severity.ERROR),
    cut = ProtoExpert.new("chirp.cut", "Datagram cut by the capture's snapshot length",
        expert.group.UNDECODED, expert.severity.WARN),
    unpadded = ProtoExpert.new("chirp.unpadded_initial",
        "INITIAL not padded to 1200 bytes (a server never opens a connection for it)",
        expert.group.PROTOCOL, expert.severity.WARN),
    oversize = ProtoExpert.new("chirp.oversize",
        "Datagram larger than 1200 bytes (a sender must not send it)",
        expert.group.PROTOCOL, expert.severity.WARN),
    empty_retry = ProtoExpert.new("chirp.empty_retry_token",
        "RETRY with an empty token (a client drops it)",
        expert.group.PROTOCOL, expert.severity.WARN),
    non_minimal = ProtoExpert.new("chirp.non_minimal_varint",
        "Non-minimal varint encoding (valid; the reference implementation never sends one)",
        expert.group.PROTOCOL, expert.severity.NOTE),
    bad_tag = ProtoExpert.new("chirp.bad_tag",
        "Authentication failed under the public key of the attempt (damaged or forged)",
        expert.group.CHECKSUM, expert.severity.ERROR),
    bad_frame = ProtoExpert.new("chirp.bad_frame",
        "Malformed frame (a receiver drops the whole packet)",
        expert.group.MALFORMED, expert.severity.ERROR),
}

local experts = {}
for _, e in pairs(ex) do
    experts[#experts + 1] = e
end
chirp.experts = experts

-- ---------------------------------------------------------------------------------------------
-- Preferences
-- ---------------------------------------------------------------------------------------------

chirp.prefs.udp_ports = Pref.range("UDP ports", tostring(DEFAULT_PORT),
    "UDP ports that carry chirp (the server's default is 7667)", 65535)
chirp.prefs.plain_ports = Pref.range("Plain-text UDP ports", "",
    "UDP ports of `chirp peer --plain`: each datagram is one line of text, unencrypted", 65535)
chirp.prefs.heuristic = Pref.bool("Recognise chirp on any port", true,
    "Take a UDP conversation as chirp when it starts with a client INITIAL: 1200 bytes, a "
        .. "well-formed header and a tag that verifies under the public initial key")
chirp.prefs.decrypt = Pref.bool("Open long-header packets", true,
    "Open INITIAL, HANDSHAKE and ACCEPT with their public keys (derived from the client's "
        .. "initial destination ID) and show their frames; check RETRY and REFUSE tags")

-- ---------------------------------------------------------------------------------------------
-- Small helpers: every read is checked against the captured length first.
-- ---------------------------------------------------------------------------------------------

-- "1-3,7667, 9000" -> { {1, 3}, {7667, 7667}, {9000, 9000} }; anything unparsable is skipped.
local function parse_ranges(s)
    local out = {}
    for part in string.gmatch(s or "", "[^,%s]+") do
        local a, b = string.match(part, "^(%d+)%-(%d+)$")
        if not a then
            a = string.match(part, "^(%d+)$")
            b = a
        end
        if a then
            out[#out + 1] = { tonumber(a), tonumber(b) }
        end
    end
    return out
end

local function in_ranges(ranges, port)
    for _, r in ipairs(ranges) do
        if port >= r[1] and port <= r[2] then
            return true
        end
    end
    return false
end

local function cid_hex(u64)
    return u64:tohex():lower()
end

local function hex_bytes(tvb, off, len)
    return tostring(tvb:range(off, len):bytes()):lower()
end

-- The length (1, 2, 4 or 8) of the varint whose first byte is `b`.
local function varint_len_of(b)
    return bit.lshift(1, bit.rshift(b, 6))
end

-- The shortest encoding of a varint value (a UInt64).
local function minimal_len(v)
    if v < UInt64(64) then
        return 1
    elseif v < UInt64(16384) then
        return 2
    elseif v < UInt64(1073741824) then
        return 4
    end
    return 8
end

local UINT64_MASK62 = UInt64(0xffffffff, 0x3fffffff)

-- Reads the varint at `off` of a buffer of `avail` readable bytes, through `byte_at`. Returns
-- value (UInt64), length; or nil when it runs past `avail`.
local function read_varint(byte_at, off, avail)
    if off >= avail then
        return nil
    end
    local first = byte_at(off)
    local n = varint_len_of(first)
    if off + n > avail then
        return nil
    end
    local v = UInt64(bit.band(first, 0x3f))
    for i = 1, n - 1 do
        v = v:lshift(8):bor(UInt64(byte_at(off + i)))
    end
    return v:band(UINT64_MASK62), n
end

-- Lua numbers are doubles (Lua 5.2) or integers (5.3+): a UInt64 above 2^31 cannot be a byte
-- count in a datagram anyway, so it is clamped to a value every length check rejects.
local function small(u64)
    if u64 > UInt64(0x7fffffff) then
        return 0x7fffffff
    end
    return u64:tonumber()
end

-- Text from the network, made safe to print (the marks chirp itself uses, docs/SECURITY.md):
-- C0 controls and DEL as ^X, C1 controls and bidi controls as <U+XXXX>, bytes that are not
-- UTF-8 as \xNN. `s` is the raw bytes.
local BIDI = {
    [0x061C] = true, [0x200E] = true, [0x200F] = true, [0x2028] = true, [0x2029] = true,
    [0x202A] = true, [0x202B] = true, [0x202C] = true, [0x202D] = true, [0x202E] = true,
    [0x2066] = true, [0x2067] = true, [0x2068] = true, [0x2069] = true,
}

local function safe_text(s)
    local out, i, n = {}, 1, #s
    while i <= n do
        local b = string.byte(s, i)
        local len, cp, min = 0, 0, 0
        if b < 0x80 then
            len, cp = 1, b
        elseif b >= 0xc2 and b <= 0xdf then
            len, cp, min = 2, b - 0xc0, 0x80
        elseif b >= 0xe0 and b <= 0xef then
            len, cp, min = 3, b - 0xe0, 0x800
        elseif b >= 0xf0 and b <= 0xf4 then
            len, cp, min = 4, b - 0xf0, 0x10000
        end
        local valid = len > 0 and i + len - 1 <= n
        for k = 1, len - 1 do
            local c = valid and string.byte(s, i + k)
            if not c or c < 0x80 or c > 0xbf then
                valid = false
                break
            end
            cp = cp * 64 + (c - 0x80)
        end
        if valid and (cp < min or cp > 0x10ffff or (cp >= 0xd800 and cp <= 0xdfff)) then
            valid = false
        end
        if not valid then
            out[#out + 1] = string.format("\\x%02x", b)
            i = i + 1
        else
            if cp < 0x20 then
                out[#out + 1] = "^" .. string.char(cp + 64)
            elseif cp == 0x7f then
                out[#out + 1] = "^?"
            elseif (cp >= 0x80 and cp <= 0x9f) or BIDI[cp] then
                out[#out + 1] = string.format("<U+%04X>", cp)
            else
                out[#out + 1] = string.sub(s, i, i + len - 1)
            end
            i = i + len
        end
    end
    return table.concat(out)
end

-- ---------------------------------------------------------------------------------------------
-- The public keys of long-header packets (PROTOCOL.md §2.2): BLAKE2s-256 derives them,
-- ChaCha20-Poly1305 opens the packets. Plain Lua over 32-bit words (BitOp), for Wireshark
-- builds without a crypto API for Lua. Only long-header packets (at most 1200 bytes, a few per
-- connection) ever go through here.
-- ---------------------------------------------------------------------------------------------

local band, bxor, bnot = bit.band, bit.bxor, bit.bnot
local rol, ror, tobit = bit.rol, bit.ror, bit.tobit
local floor = math.floor

-- The little-endian 32-bit word at 1-based index `i` of string `s`.
local function le32(s, i)
    local a, b, c, d = string.byte(s, i, i + 3)
    return tobit(a + b * 0x100 + c * 0x10000 + d * 0x1000000)
end

local function le32_bytes(w)
    return string.char(band(w, 0xff), band(bit.rshift(w, 8), 0xff),
        band(bit.rshift(w, 16), 0xff), band(bit.rshift(w, 24), 0xff))
end

local B2S_IV = {
    tobit(0x6A09E667), tobit(0xBB67AE85), tobit(0x3C6EF372), tobit(0xA54FF53A),
    tobit(0x510E527F), tobit(0x9B05688C), tobit(0x1F83D9AB), tobit(0x5BE0CD19),
}

local B2S_SIGMA = {
    { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 },
    { 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3 },
    { 11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4 },
    { 7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8 },
    { 9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13 },
    { 2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9 },
    { 12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11 },
    { 13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10 },
    { 6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5 },
    { 10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0 },
}

local function b2s_compress(h, block, count, last)
    local v, m = {}, {}
    for i = 1, 8 do
        v[i], v[i + 8] = h[i], B2S_IV[i]
    end
    for i = 1, 16 do
        m[i] = le32(block, 4 * i - 3)
    end
    v[13] = bxor(v[13], tobit(count % 0x100000000))
    v[14] = bxor(v[14], tobit(floor(count / 0x100000000)))
    if last then
        v[15] = bnot(v[15])
    end
    local function g(a, b, c, d, x, y)
        v[a] = tobit(v[a] + v[b] + x)
        v[d] = ror(bxor(v[d], v[a]), 16)
        v[c] = tobit(v[c] + v[d])
        v[b] = ror(bxor(v[b], v[c]), 12)
        v[a] = tobit(v[a] + v[b] + y)
        v[d] = ror(bxor(v[d], v[a]), 8)
        v[c] = tobit(v[c] + v[d])
        v[b] = ror(bxor(v[b], v[c]), 7)
    end
    for r = 1, 10 do
        local s = B2S_SIGMA[r]
        g(1, 5, 9, 13, m[s[1] + 1], m[s[2] + 1])
        g(2, 6, 10, 14, m[s[3] + 1], m[s[4] + 1])
        g(3, 7, 11, 15, m[s[5] + 1], m[s[6] + 1])
        g(4, 8, 12, 16, m[s[7] + 1], m[s[8] + 1])
        g(1, 6, 11, 16, m[s[9] + 1], m[s[10] + 1])
        g(2, 7, 12, 13, m[s[11] + 1], m[s[12] + 1])
        g(3, 8, 9, 14, m[s[13] + 1], m[s[14] + 1])
        g(4, 5, 10, 15, m[s[15] + 1], m[s[16] + 1])
    end
    for i = 1, 8 do
        h[i] = bxor(h[i], v[i], v[i + 8])
    end
end

-- BLAKE2s-256 of `data` (RFC 7693, unkeyed, 32-byte output), as a 32-byte string.
local function blake2s(data)
    local h = {}
    for i = 1, 8 do
        h[i] = B2S_IV[i]
    end
    h[1] = bxor(h[1], 0x01010020) -- depth 1, fanout 1, no key, 32-byte digest
    local n, off = #data, 0
    while n - off > 64 do
        b2s_compress(h, string.sub(data, off + 1, off + 64), off + 64, false)
        off = off + 64
    end
    local tail = string.sub(data, off + 1)
    b2s_compress(h, tail .. string.rep("\0", 64 - #tail), n, true)
    local out = {}
    for i = 1, 8 do
        out[i] = le32_bytes(h[i])
    end
    return table.concat(out)
end

-- One 64-byte ChaCha20 block (RFC 8439) for a key of eight words, a 32-bit counter and a
-- nonce of three words.
local function chacha20_block(key_words, counter, nonce)
    local x = {
        tobit(0x61707865), tobit(0x3320646e), tobit(0x79622d32), tobit(0x6b206574),
        key_words[1], key_words[2], key_words[3], key_words[4],
        key_words[5], key_words[6], key_words[7], key_words[8],
        tobit(counter), nonce[1], nonce[2], nonce[3],
    }
    local s = {}
    for i = 1, 16 do
        s[i] = x[i]
    end
    local function qr(a, b, c, d)
        s[a] = tobit(s[a] + s[b]); s[d] = rol(bxor(s[d], s[a]), 16)
        s[c] = tobit(s[c] + s[d]); s[b] = rol(bxor(s[b], s[c]), 12)
        s[a] = tobit(s[a] + s[b]); s[d] = rol(bxor(s[d], s[a]), 8)
        s[c] = tobit(s[c] + s[d]); s[b] = rol(bxor(s[b], s[c]), 7)
    end
    for _ = 1, 10 do
        qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15); qr(4, 8, 12, 16)
        qr(1, 6, 11, 16); qr(2, 7, 12, 13); qr(3, 8, 9, 14); qr(4, 5, 10, 15)
    end
    local out = {}
    for i = 1, 16 do
        out[i] = le32_bytes(tobit(s[i] + x[i]))
    end
    return table.concat(out)
end

-- Poly1305 (RFC 8439). The accumulator is kept in ten 13-bit limbs (2^130 = 2^(10 * 13)), so
-- every product and sum stays far below 2^53 and is exact in a double as in an integer.
local LIMB = 8192

-- Little-endian bytes s[i..j] (and a 1 bit just above them when `extra_bit`) as ten limbs.
local function to_limbs(s, i, j, extra_bit)
    local limbs, acc, nbits = {}, 0, 0
    local function push(byte)
        acc = acc + byte * 2 ^ nbits
        nbits = nbits + 8
        while nbits >= 13 and #limbs < 10 do
            limbs[#limbs + 1] = acc % LIMB
            acc = floor(acc / LIMB)
            nbits = nbits - 13
        end
    end
    for k = i, j do
        push(string.byte(s, k))
    end
    if extra_bit then
        push(1)
    end
    while #limbs < 10 do
        limbs[#limbs + 1] = acc % LIMB
        acc = floor(acc / LIMB)
    end
    return limbs
end

local function carry(h)
    repeat
        local c = 0
        for i = 1, 10 do
            local x = h[i] + c
            h[i] = x % LIMB
            c = floor(x / LIMB)
        end
        h[1] = h[1] + 5 * c -- 2^130 = 5 (mod 2^130 - 5)
    until c == 0
end

-- The 16-byte Poly1305 tag of `msg` under the 32-byte one-time key `otk`.
local function poly1305(otk, msg)
    local clamp = { 0xff, 0xff, 0xff, 0x0f, 0xfc, 0xff, 0xff, 0x0f,
        0xfc, 0xff, 0xff, 0x0f, 0xfc, 0xff, 0xff, 0x0f }
    local rb = {}
    for k = 1, 16 do
        rb[k] = string.char(band(string.byte(otk, k), clamp[k]))
    end
    local r = to_limbs(table.concat(rb), 1, 16, false)
    local h = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }
    local n = #msg
    for off = 1, n, 16 do
        local blk = to_limbs(msg, off, math.min(off + 15, n), true)
        for i = 1, 10 do
            h[i] = h[i] + blk[i]
        end
        local t = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }
        for i = 1, 10 do
            local hi = h[i]
            if hi ~= 0 then
                for j = 1, 10 do
                    local k = i + j - 1
                    if k > 10 then
                        t[k - 10] = t[k - 10] + 5 * hi * r[j]
                    else
                        t[k] = t[k] + hi * r[j]
                    end
                end
            end
        end
        carry(t)
        h = t
    end
    -- h < 2^130 now: subtract p = 2^130 - 5 once if h >= p (then h + 5 overflows 2^130).
    local g, c = {}, 5
    for i = 1, 10 do
        local x = h[i] + c
        g[i] = x % LIMB
        c = floor(x / LIMB)
    end
    if c ~= 0 then
        h = g
    end
    -- tag = (h + s) mod 2^128, little-endian.
    local out, acc, nbits, li, sc = {}, 0, 0, 1, 0
    for k = 1, 16 do
        while nbits < 8 do
            acc = acc + (h[li] or 0) * 2 ^ nbits
            li = li + 1
            nbits = nbits + 13
        end
        local byte = acc % 256 + string.byte(otk, 16 + k) + sc
        acc = floor(acc / 256)
        nbits = nbits - 8
        out[k] = string.char(byte % 256)
        sc = floor(byte / 256)
    end
    return table.concat(out)
end

local function pad16(n)
    return string.rep("\0", (16 - n % 16) % 16)
end

local function le64(n)
    return le32_bytes(tobit(n % 0x100000000)) .. le32_bytes(tobit(floor(n / 0x100000000)))
end

-- ChaCha20-Poly1305 open (RFC 8439) with Noise's nonce: 4 zero bytes, then the packet number
-- as a little-endian u64 (given as its low and high 32-bit halves). Returns the plaintext, or
-- nil when the tag does not verify.
local function aead_open(key, pn_lo, pn_hi, aad, sealed)
    local kw = {}
    for i = 1, 8 do
        kw[i] = le32(key, 4 * i - 3)
    end
    local nonce = { 0, tobit(pn_lo), tobit(pn_hi) }
    local otk = string.sub(chacha20_block(kw, 0, nonce), 1, 32)
    local ct_len = #sealed - TAG_LEN
    local ct = string.sub(sealed, 1, ct_len)
    local mac = poly1305(otk, aad .. pad16(#aad) .. ct .. pad16(ct_len) .. le64(#aad)
        .. le64(ct_len))
    if mac ~= string.sub(sealed, ct_len + 1) then
        return nil
    end
    local out = {}
    for blk = 0, floor((ct_len - 1) / 64) do
        local ks = chacha20_block(kw, blk + 1, nonce)
        local from = blk * 64
        local chunk = {}
        for i = 1, math.min(64, ct_len - from) do
            chunk[i] = string.char(bxor(string.byte(ct, from + i), string.byte(ks, i)) % 256)
        end
        out[#out + 1] = table.concat(chunk)
    end
    return table.concat(out)
end

-- The keys of one connection attempt, by its initial destination ID R (8 bytes, big-endian):
-- BLAKE2s-256("chirp v2 initial " || label || R). Cached: an attempt has a handful of packets.
local key_cache = {}

local function initial_key(label, r_bytes)
    local id = label .. r_bytes
    local k = key_cache[id]
    if not k then
        k = blake2s("chirp v2 initial " .. id)
        key_cache[id] = k
    end
    return k
end

-- ---------------------------------------------------------------------------------------------
-- Frames (PROTOCOL.md §3), shown for the long-header packets this dissector can open
-- ---------------------------------------------------------------------------------------------

-- Frame types a long-header packet may carry (§3): PADDING, PING, ACK, CLOSE, HANDSHAKE.
local LONG_ALLOWED = { [0x00] = true, [0x01] = true, [0x02] = true, [0x05] = true, [0x06] = true }

-- The Noise message each long-header type carries (§3.7).
local NOISE_MESSAGE = { [T_INITIAL] = 1, [T_ACCEPT] = 2, [T_HANDSHAKE] = 3 }

-- Dissects the plaintext `ftvb` of a packet of type `ty`; returns a short summary for the Info
-- column and the set of frame types seen. A frame that does not decode ends the walk: it makes
-- the receiver drop the whole packet (§2.4 step 8).
local function dissect_frames(ftvb, ty, tree)
    local n = ftvb:len()
    local byte_at = function(o) return ftvb:range(o, 1):uint() end
    local summary, seen = {}, {}
    local off = 0
    local function bad(item, msg)
        item:add_proto_expert_info(ex.bad_frame, msg)
        summary[#summary + 1] = "[bad frame: " .. msg .. "]"
    end
    while off < n do
        local start = off
        local ftype = byte_at(off)
        local name = FRAME_NAMES[ftype]
        local item = tree:add(f.frame, ftvb:range(off, 1))
        off = off + 1
        if not name then
            bad(item, string.format("unknown frame type 0x%02x", ftype))
            return table.concat(summary, " "), seen
        end
        seen[ftype] = true
        local ok = true
        -- Reads one varint field into `field`; nil (and flagged) when it runs past the end.
        local function varint(field, what)
            local v, l = read_varint(byte_at, off, n)
            if not v then
                bad(item, name .. " " .. what .. " runs past the end of the plaintext")
                ok = false
                return nil
            end
            local sub = item:add(field, ftvb:range(off, l), v)
            if l ~= minimal_len(v) then
                sub:add_proto_expert_info(ex.non_minimal)
            end
            off = off + l
            return v
        end
        -- `count` bytes into `field`; nil (and flagged) when they run past the end.
        local function bytes(field, count, what)
            if count > n - off then
                bad(item, name .. " " .. what .. " runs past the end of the plaintext")
                ok = false
                return nil
            end
            local r = count > 0 and ftvb:range(off, count) or nil
            if r then
                item:add(field, r)
            end
            off = off + count
            return r
        end
        local text = name
        if ftype == 0x00 then
            while off < n and byte_at(off) == 0 do
                off = off + 1
            end
            item:add(f.padding_len, ftvb:range(start, off - start), off - start)
            text = string.format("PADDING×%d", off - start)
        elseif ftype == 0x02 then
            local largest = varint(f.ack_largest, "largest acknowledged")
            local _ = ok and varint(f.ack_delay, "ACK delay")
            local count = ok and varint(f.ack_count, "range count")
            if ok and count >= UInt64(64) then
                bad(item, "ACK range count above 63")
                ok = false
            end
            local first = ok and varint(f.ack_first, "first range")
            if ok and first > largest then
                bad(item, "ACK range below packet number 0")
                ok = false
            end
            if ok then
                local lo, hi = largest - first, largest
                local ranges = { tostring(lo) .. "..=" .. tostring(hi) }
                for _ = 1, count:tonumber() do
                    local gap = varint(f.ack_gap, "gap")
                    local rlen = ok and varint(f.ack_len, "range length")
                    if not ok then
                        break
                    end
                    if gap + UInt64(2) > lo then
                        bad(item, "ACK gap below packet number 0")
                        ok = false
                        break
                    end
                    hi = lo - gap - UInt64(2)
                    if rlen > hi then
                        bad(item, "ACK range below packet number 0")
                        ok = false
                        break
                    end
                    lo = hi - rlen
                    ranges[#ranges + 1] = tostring(lo) .. "..=" .. tostring(hi)
                end
                if ok then
                    item:add(f.ack_ranges, ftvb:range(start, off - start),
                        table.concat(ranges, ", ")):set_generated()
                    text = "ACK " .. table.concat(ranges, ",")
                end
            end
        elseif ftype == 0x03 then
            local offset = varint(f.msg_offset, "offset")
            local mlen = ok and varint(f.msg_len, "length")
            if ok then
                bytes(f.msg_data, small(mlen), "data")
            end
            if ok and offset + mlen > UINT64_MASK62 then
                bad(item, "MESSAGE beyond stream offset 2^62 - 1")
                ok = false
            end
        elseif ftype == 0x04 then
            varint(f.max_data, "limit")
        elseif ftype == 0x05 then
            local code = varint(f.close_code, "code")
            local rlen = ok and varint(f.close_reason_len, "reason length")
            local r = ok and bytes(f.close_reason, small(rlen), "reason")
            if ok then
                local cname = CLOSE_CODES[small(code)]
                    or (code >= UInt64(0x100) and "application" or "reserved")
                text = "CLOSE " .. cname
                if r then
                    text = text .. ' "' .. safe_text(r:raw()) .. '"'
                end
            end
        elseif ftype == 0x06 then
            local hlen = varint(f.hs_len, "length")
            local m = ok and bytes(f.hs_msg, small(hlen), "message")
            if ok then
                local number = NOISE_MESSAGE[ty]
                if number then
                    item:add(f.hs_number, m or ftvb:range(start, off - start), number)
                        :set_generated()
                    text = string.format("HANDSHAKE m%d(%d)", number, small(hlen))
                else
                    text = string.format("HANDSHAKE(%d)", small(hlen))
                end
            end
        elseif ftype == 0x07 or ftype == 0x08 then
            bytes(f.path_data, 8, "data")
        elseif ftype == 0x09 then
            bytes(f.frame_reset_token, 16, "token")
        elseif ftype == 0x0a then
            varint(f.fin, "final offset")
        elseif ftype == 0x0b then
            varint(f.received, "offset")
        elseif ftype == 0x0c then
            local offset = varint(f.bulk_offset, "offset")
            local blen = ok and varint(f.bulk_len, "length")
            if ok then
                bytes(f.bulk_data, small(blen), "data")
            end
            if ok and offset + blen > UINT64_MASK62 then
                bad(item, "BULK beyond bulk-channel offset 2^62 - 1")
                ok = false
            end
        elseif ftype == 0x0d then
            varint(f.bulk_max_data, "limit")
        end
        item:set_len(off - start)
        item:append_text(" (" .. text .. ")")
        summary[#summary + 1] = text
        if not ok then
            return table.concat(summary, " "), seen
        end
        if not LONG_ALLOWED[ftype] then
            bad(item, name .. " is not allowed in a long-header packet")
            return table.concat(summary, " "), seen
        end
    end
    return table.concat(summary, " "), seen
end

-- ---------------------------------------------------------------------------------------------
-- Packets (PROTOCOL.md §2.1)
-- ---------------------------------------------------------------------------------------------

-- Client ID C -> the attempt's initial destination ID R (8 raw bytes), learnt from authentic
-- INITIALs: ACCEPT (to C) and HANDSHAKE (from C) are sealed under the keys of R but do not
-- carry it.
local attempts = {}

function chirp.init()
    attempts = {}
    key_cache = {}
end

-- Opens a long-header packet with the public key `label` of R; the plaintext or nil.
local function open_long(tvb, label, r_bytes, pn, aad_len)
    local raw = tvb:range(0, tvb:len()):raw()
    local key = initial_key(label, r_bytes)
    return aead_open(key, pn:lower(), pn:higher(), string.sub(raw, 1, aad_len),
        string.sub(raw, aad_len + 1))
end

-- Dissects one chirp datagram of `len` bytes, of which `tvb` holds what was captured (a whole
-- UDP payload, or one segment of a GSO super-datagram); returns its summary for the Info
-- column.
local function dissect_packet(tvb, len, pinfo, tree)
    local cap = tvb:len()
    local root = tree:add(chirp, tvb:range(0, cap))
    root:add(f.datagram_len, tvb:range(0, cap), len):set_generated()
    local info = {}
    local function finish()
        return table.concat(info, " ")
    end
    local function malformed(msg)
        root:add_proto_expert_info(ex.malformed, msg)
        info[#info + 1] = "[Malformed: " .. msg .. "]"
        return finish()
    end
    -- Whether bytes [off, off + n) can be read: flagged when they are past the end of the
    -- datagram (malformed) or past what the capture kept (cut).
    local function need(off, n, what)
        if off + n > len then
            malformed(what .. " runs past the end of the datagram")
            return false
        end
        if off + n > cap then
            root:add_proto_expert_info(ex.cut, string.format(
                "%s not captured (%d of %d bytes kept)", what, cap, len))
            info[#info + 1] = "[cut by the capture]"
            return false
        end
        return true
    end
    local byte_at = function(o) return tvb:range(o, 1):uint() end
    -- A varint header field, or nil (flagged) when it does not fit.
    local function varint(off, field, what)
        if not need(off, 1, what) then
            return nil
        end
        local l = varint_len_of(byte_at(off))
        if not need(off, l, what) then
            return nil
        end
        local v = read_varint(byte_at, off, cap)
        local item = root:add(field, tvb:range(off, l), v)
        if l ~= minimal_len(v) then
            item:add_proto_expert_info(ex.non_minimal)
        end
        return v, l, item
    end

    if len == 0 then
        return malformed("empty datagram")
    end
    if not need(0, 1, "version") then
        return finish()
    end
    local version = byte_at(0)
    local vitem = root:add(f.version, tvb:range(0, 1))
    if version ~= VERSION then
        vitem:add_proto_expert_info(ex.malformed, string.format(
            "version 0x%02x: only version 2 is spoken (there is no version negotiation)",
            version))
        info[#info + 1] = string.format("Unknown version 0x%02x", version)
        return finish()
    end
    if len < 2 then
        return malformed("no packet type")
    end
    if not need(1, 1, "packet type") then
        return finish()
    end
    local ty = byte_at(1)
    root:add(f.type, tvb:range(1, 1))
    local name = TYPE_NAMES[ty]
    if not name then
        return malformed(string.format("unknown packet type 0x%02x", ty))
    end
    info[1] = name
    root:append_text(", " .. TYPE_VALS[ty])
    if ty == T_DATA0 or ty == T_DATA1 then
        root:add(f.key_phase, tvb:range(1, 1), ty == T_DATA1 and 1 or 0):set_generated()
        info[1] = string.format("DATA KP%d", ty == T_DATA1 and 1 or 0)
    end
    if ty ~= T_RESET then
        root:add(f.long, tvb:range(1, 1), is_long(ty)):set_generated()
    end

    if ty == T_RESET then
        if len ~= RESET_LEN then
            return malformed(string.format("a RESET is exactly %d bytes, this one is %d",
                RESET_LEN, len))
        end
        if not need(2, 16, "reset token") then
            return finish()
        end
        root:add(f.reset_token, tvb:range(2, 16))
        info[#info + 1] = "Token=" .. hex_bytes(tvb, 2, 16)
        root:append_text(" (stateless reset: the sender does not know the connection)")
        return finish()
    end
    if len < MIN_PACKET_LEN then
        return malformed(string.format("%d bytes: shorter than any %s (%d at least)", len,
            name, MIN_PACKET_LEN))
    end

    -- Connection IDs.
    local off = 2
    if not need(off, CID_LEN, "destination connection ID") then
        return finish()
    end
    local dcid_range = tvb:range(off, CID_LEN)
    local dcid = dcid_range:uint64()
    root:add(f.dcid, dcid_range)
    root:add(f.cid, dcid_range):set_hidden()
    info[#info + 1] = "DCID=" .. cid_hex(dcid)
    off = off + CID_LEN
    local scid, scid_range
    if is_long(ty) then
        if not need(off, CID_LEN, "source connection ID") then
            return finish()
        end
        scid_range = tvb:range(off, CID_LEN)
        scid = scid_range:uint64()
        root:add(f.scid, scid_range)
        root:add(f.cid, scid_range):set_hidden()
        info[#info + 1] = "SCID=" .. cid_hex(scid)
        off = off + CID_LEN
    end

    -- Token (INITIAL, RETRY) or reason code (REFUSE).
    if ty == T_INITIAL or ty == T_RETRY then
        local tl, l, item = varint(off, f.token_len, "token length")
        if not tl then
            return finish()
        end
        off = off + l
        if tl > UInt64(MAX_TOKEN_LEN) then
            item:add_proto_expert_info(ex.malformed, "token longer than 64 bytes")
            info[#info + 1] = "[Malformed: token longer than 64 bytes]"
            return finish()
        end
        local n = tl:tonumber()
        if not need(off, n, "token") then
            return finish()
        end
        if n > 0 then
            root:add(f.token, tvb:range(off, n))
        end
        info[#info + 1] = string.format("Token=%dB", n)
        if ty == T_RETRY and n == 0 then
            item:add_proto_expert_info(ex.empty_retry)
        end
        off = off + n
    elseif ty == T_REFUSE then
        local code, l, item = varint(off, f.reason, "reason code")
        if not code then
            return finish()
        end
        off = off + l
        local rname = REFUSE_REASONS[small(code)] or "unknown code, still a refusal"
        item:append_text(" (" .. rname .. ")")
        info[#info + 1] = "Reason=" .. (REFUSE_REASONS[small(code)] or ("0x" .. code:tohex()))
    end

    -- Packet number: a plain varint, never truncated or protected (§2.3).
    local tag_only = ty == T_RETRY or ty == T_REFUSE
    local pn = UInt64(0)
    if not tag_only then
        local v, l = varint(off, f.pn, "packet number")
        if not v then
            return finish()
        end
        pn = v
        root:add(f.pn_len, tvb:range(off, l), l):set_generated()
        info[#info + 1] = "PN=" .. tostring(pn)
        off = off + l
    end

    -- Sealed frames and the tag: the last 16 bytes of the datagram.
    local sealed = len - off
    if tag_only and sealed ~= TAG_LEN then
        return malformed(string.format(
            "%s must end with exactly the 16-byte tag, but %d bytes follow", name, sealed))
    end
    if not tag_only and sealed < TAG_LEN + 1 then
        return malformed(string.format(
            "%d bytes after the packet number: at least 17 (a frame byte and the tag) needed",
            sealed))
    end
    local ct_len = sealed - TAG_LEN
    if ct_len > 0 then
        root:add(f.payload_len, tvb:range(off, math.min(ct_len, math.max(cap - off, 0))),
            ct_len):set_generated()
    end
    if not need(off, sealed, "encrypted frames and tag") then
        return finish()
    end
    if ct_len > 0 then
        root:add(f.payload, tvb:range(off, ct_len))
    end
    root:add(f.tag, tvb:range(len - TAG_LEN, TAG_LEN))
    local aad_len = off

    -- What the size says. A client pads its INITIALs to 1200 bytes, but not one that carries
    -- a CLOSE (§7.4), which only the frames tell: `size_checked` says which it was.
    if ty == T_INITIAL then
        root:add(f.padded, tvb:range(0, cap), len == INITIAL_SIZE):set_generated()
    end
    local function size_checked(closing)
        if ty ~= T_INITIAL or len >= INITIAL_SIZE then
            return
        end
        if closing then
            root:add(tvb:range(0, cap), string.format(
                "[Not padded: an INITIAL that carries CLOSE is sent as it is (%d bytes)]", len))
        else
            root:add_proto_expert_info(ex.unpadded, string.format(
                "INITIAL of %d bytes: a client pads every INITIAL to 1200", len))
        end
    end
    if len > MAX_DATAGRAM_SIZE then
        root:add_proto_expert_info(ex.oversize, string.format("%d bytes", len))
    end

    -- The public keys of the attempt (long headers) or the Noise keys (DATA).
    if ty == T_DATA0 or ty == T_DATA1 then
        root:add(tvb:range(off, ct_len),
            "Frames: encrypted under the connection's Noise keys, not readable")
        info[#info + 1] = string.format("[%d B encrypted]", ct_len)
        return finish()
    end
    -- R, the client's initial destination ID, names the attempt and its keys: the destination
    -- of an INITIAL, the source of the RETRY or REFUSE answering it; ACCEPT and HANDSHAKE do
    -- not carry it, but the client's ID C does (their destination and source), which the
    -- attempt's INITIAL tied to R. `named_by` is where this packet names the attempt.
    local r_bytes, label, named_by
    if ty == T_INITIAL then
        r_bytes, label, named_by = dcid_range:raw(), "client", dcid_range
    elseif ty == T_HANDSHAKE then
        r_bytes, label, named_by = attempts[scid_range:raw()], "client", scid_range
    elseif ty == T_ACCEPT then
        r_bytes, label, named_by = attempts[dcid_range:raw()], "server", dcid_range
    elseif ty == T_RETRY then
        r_bytes, label, named_by = scid_range:raw(), "retry", scid_range
    else -- REFUSE
        r_bytes, label, named_by = scid_range:raw(), "refuse", scid_range
    end
    if not chirp.prefs.decrypt then
        size_checked(false)
        info[#info + 1] = string.format("[%d B encrypted]", ct_len)
        return finish()
    end
    if not r_bytes then
        root:add(tvb:range(off, ct_len), "Frames: sealed under the public keys of an "
            .. "attempt whose INITIAL is not in this capture, not opened")
        info[#info + 1] = string.format("[%d B encrypted, INITIAL not captured]", ct_len)
        return finish()
    end
    root:add(f.initial_dcid, named_by, UInt64.fromhex(tostring(ByteArray.new(r_bytes, true))))
        :set_generated()
    local plain = open_long(tvb, label, r_bytes, pn, aad_len)
    root:add(f.authentic, tvb:range(len - TAG_LEN, TAG_LEN), plain ~= nil):set_generated()
    if plain and ty == T_INITIAL then
        -- Only an authentic INITIAL says which R belongs to client ID C.
        attempts[scid_range:raw()] = r_bytes
    end
    if not plain then
        size_checked(false)
        root:add_proto_expert_info(ex.bad_tag)
        info[#info + 1] = "[tag does not verify]"
        return finish()
    end
    local seen = {}
    if #plain > 0 then
        local ftvb = ByteArray.new(plain, true):tvb("Decrypted frames")
        local ftree = root:add(ftvb:range(0, ftvb:len()), "Frames (decrypted with the "
            .. "public " .. label .. " key)")
        local summary
        summary, seen = dissect_frames(ftvb, ty, ftree)
        info[#info + 1] = "[" .. summary .. "]"
    end
    size_checked(seen[0x05])
    return finish()
end

-- `chirp peer --plain`: one datagram is one line of text, as it was typed, unencrypted.
local function dissect_plain(tvb, pinfo, tree)
    pinfo.cols.protocol = "chirp plain"
    local len, cap = tvb:reported_len(), tvb:len()
    local root = tree:add(chirp, tvb:range(0, cap), "chirp --plain (unencrypted text)")
    root:add(f.text_len, tvb:range(0, cap), len):set_generated()
    if cap < len then
        root:add_proto_expert_info(ex.cut, string.format("%d of %d bytes kept", cap, len))
    end
    if cap == 0 then
        pinfo.cols.info:set("Text (empty)")
        return
    end
    root:add_packet_field(f.text, tvb:range(0, cap), ENC_UTF_8)
    pinfo.cols.info:set('Text: "' .. safe_text(tvb:range(0, cap):raw()) .. '"')
end

-- ---------------------------------------------------------------------------------------------
-- GSO super-datagrams
-- ---------------------------------------------------------------------------------------------

-- Where the datagrams of `tvb` start and how long they are: { {offset, length}, ... }. One
-- entry for a plain datagram; several for a GSO super-datagram: segments of one size s, the
-- last possibly shorter, all to one destination. For chirp that means every segment starts
-- with version 2, a type byte and (but for RESET, which is always 18 bytes) the destination ID
-- of the first, at offsets 0, s, 2s...: s is the smallest size for which that holds (a chance
-- match inside ciphertext needs 80 bits to agree at every multiple of s).
local function segments(tvb)
    local len, cap = tvb:reported_len(), tvb:len()
    local whole = { { 0, len } }
    if len <= RESET_LEN or cap < 2 + CID_LEN then
        return whole
    end
    local raw = tvb:range(0, cap):raw()
    local ty = string.byte(raw, 2)
    if string.byte(raw, 1) ~= VERSION or not TYPE_NAMES[ty] then
        return whole
    end
    -- Whether a datagram of the batch can start at 0-based offset `o` (true if not captured).
    local function starts(o)
        local need = ty == T_RESET and 2 or 2 + CID_LEN
        if o + need > cap then
            return o + need <= len
        end
        local t = string.byte(raw, o + 2)
        if string.byte(raw, o + 1) ~= VERSION or not TYPE_NAMES[t] then
            return false
        end
        if ty == T_RESET then
            return t == T_RESET
        end
        return t ~= T_RESET and string.sub(raw, o + 3, o + 2 + CID_LEN) == string.sub(raw, 3, 10)
    end
    local function split(s)
        -- Every datagram chirp sends is a whole packet: a RESET is 18 bytes, any other at
        -- least 28.
        local last = (len - 1) % s + 1
        if last < (ty == T_RESET and RESET_LEN or MIN_PACKET_LEN) then
            return nil
        end
        for o = s, len - 1, s do
            if not starts(o) then
                return nil
            end
        end
        local out = {}
        for o = 0, len - 1, s do
            out[#out + 1] = { o, math.min(s, len - o) }
        end
        return out
    end
    if ty == T_RESET then
        return split(RESET_LEN) or whole
    end
    local dcid = string.sub(raw, 3, 2 + CID_LEN)
    local from = 1 + MIN_PACKET_LEN + 2 -- the ID of a segment at offset 28, 1-based
    while true do
        local at = string.find(raw, dcid, from, true)
        if not at then
            return whole
        end
        local s = at - 3 -- the 0-based offset of the segment holding this ID
        local out = starts(s) and split(s)
        if out then
            return out
        end
        from = at + 1
    end
end

-- ---------------------------------------------------------------------------------------------
-- Registration: ports, preferences, heuristic
-- ---------------------------------------------------------------------------------------------

local plain_ranges = {}

local function dissect_chirp(tvb, pinfo, tree)
    pinfo.cols.protocol = "chirp"
    local cap = tvb:len()
    local segs = segments(tvb)
    if #segs == 1 then
        pinfo.cols.info:set(dissect_packet(tvb, tvb:reported_len(), pinfo, tree))
        return
    end
    local gso = tree:add(chirp, tvb:range(0, cap), string.format(
        "chirp GSO super-datagram: %d datagrams of %d bytes (the sender's kernel splits it)",
        #segs, segs[1][2]))
    gso:add(f.gso_segments, tvb:range(0, cap), #segs):set_generated()
    gso:add(f.gso_size, tvb:range(0, math.min(cap, segs[1][2])), segs[1][2]):set_generated()
    local infos = {}
    for _, s in ipairs(segs) do
        local off, slen = s[1], s[2]
        local kept = math.min(slen, cap - off)
        if kept <= 0 then
            gso:add_proto_expert_info(ex.cut, string.format(
                "datagrams from offset %d not captured (%d of %d bytes kept)", off, cap,
                tvb:reported_len()))
            infos[#infos + 1] = "[cut by the capture]"
            break
        end
        infos[#infos + 1] = dissect_packet(tvb:range(off, kept):tvb(), slen, pinfo, tree)
    end
    pinfo.cols.info:set(string.format("[GSO %d×%d] ", #segs, segs[1][2])
        .. table.concat(infos, " | "))
end

local function dissect(tvb, pinfo, tree)
    local plain = in_ranges(plain_ranges, pinfo.src_port)
        or in_ranges(plain_ranges, pinfo.dst_port)
    local ok, err = pcall(plain and dissect_plain or dissect_chirp, tvb, pinfo, tree)
    if not ok then
        -- A bug here, not in the packet: still an expert item, never a Lua error.
        tree:add_proto_expert_info(ex.malformed, "chirp dissector error: " .. tostring(err))
    end
    return tvb:len()
end

chirp.dissector = dissect

-- A client INITIAL, exactly: 1200 bytes (the first of a GSO super-datagram of them, too),
-- version 2, type INITIAL, a token of at most 64 bytes, a packet number, and a tag that
-- verifies under the client initial key of its destination ID.
local function looks_like_initial(tvb)
    if tvb:len() < INITIAL_SIZE or tvb:reported_len() % INITIAL_SIZE ~= 0 then
        return false
    end
    local first = tvb:range(0, INITIAL_SIZE):tvb()
    if first:range(0, 1):uint() ~= VERSION or first:range(1, 1):uint() ~= T_INITIAL then
        return false
    end
    local byte_at = function(o) return first:range(o, 1):uint() end
    local off = 2 + 2 * CID_LEN
    local tl, l = read_varint(byte_at, off, INITIAL_SIZE)
    if not tl or tl > UInt64(MAX_TOKEN_LEN) then
        return false
    end
    off = off + l + tl:tonumber()
    local pn, pl = read_varint(byte_at, off, INITIAL_SIZE)
    if not pn then
        return false
    end
    off = off + pl
    if INITIAL_SIZE - off < TAG_LEN + 1 then
        return false
    end
    return open_long(first, "client", first:range(2, CID_LEN):raw(), pn, off) ~= nil
end

local function heuristic(tvb, pinfo, tree)
    if not chirp.prefs.heuristic then
        return false
    end
    local ok, yes = pcall(looks_like_initial, tvb)
    if not ok or not yes then
        return false
    end
    -- The rest of this UDP conversation is chirp too (ACCEPT, HANDSHAKE, DATA...).
    pinfo.conversation = chirp
    dissect(tvb, pinfo, tree)
    return true
end

chirp:register_heuristic("udp", heuristic)

local udp_port_table = DissectorTable.get("udp.port")
udp_port_table:add_for_decode_as(chirp)

local function register_ports()
    udp_port_table:remove_all(chirp)
    plain_ranges = parse_ranges(chirp.prefs.plain_ports)
    for _, ranges in ipairs({ parse_ranges(chirp.prefs.udp_ports), plain_ranges }) do
        for _, r in ipairs(ranges) do
            for port = r[1], math.min(r[2], 65535) do
                udp_port_table:add(port, chirp)
            end
        end
    end
end

function chirp.prefs_changed()
    register_ports()
end

register_ports()
