# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Validate the configuration of a remotely managed Cloudflare Tunnel.

This applies the rules cloudflared itself applies when it loads ingress
rules (``ingress.validateIngress`` and the JSON decoding of the remote
configuration), so that our modules can refuse a configuration before it is
written through the API instead of leaving a tunnel that cloudflared will not
load. It is written from cloudflared's behaviour, not copied from its code;
docs/ingress-validation.md lists the rules, and
tests/integration/test_cloudflare_ingress.py checks every fixture against the
real ``cloudflared tunnel ingress validate --json``.

Pure standard library; runs on the Ansible controller (Python 3.8+).

API::

    errors = validate_ingress(config)   # list of messages, [] when valid
    check_ingress(config)               # raises IngressError listing all of them
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

from collections.abc import Mapping

_STR = (str,)


class IngressError(ValueError):
    """Raised by check_ingress(); ``errors`` holds every message."""

    def __init__(self, errors):
        self.errors = list(errors)
        super(IngressError, self).__init__(
            'invalid tunnel ingress configuration:\n- ' + '\n- '.join(self.errors))


# ---------------------------------------------------------------------------
# Schema of the remote configuration (cloudflared config.OriginRequestConfig,
# config.WarpRoutingConfig and ingress.RemoteConfigJSON). Durations are whole
# seconds in the remote (JSON) form.

DURATION = 'duration'
BOOL = 'bool'
STRING = 'string'
INT = 'int'        # Go int (64-bit)
UINT = 'uint'      # Go uint / uint64
IP_RULES = 'ipRules'
ACCESS = 'access'

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1

ORIGIN_REQUEST_KEYS = {
    'connectTimeout': DURATION,
    'tlsTimeout': DURATION,
    'tcpKeepAlive': DURATION,
    'noHappyEyeballs': BOOL,
    'keepAliveConnections': INT,
    'keepAliveTimeout': DURATION,
    'httpHostHeader': STRING,
    'originServerName': STRING,
    'matchSNItoHost': BOOL,
    'caPool': STRING,
    'noTLSVerify': BOOL,
    'disableChunkedEncoding': BOOL,
    'bastionMode': BOOL,
    'proxyAddress': STRING,
    'proxyPort': UINT,
    'proxyType': STRING,
    'ipRules': IP_RULES,
    'http2Origin': BOOL,
    'access': ACCESS,
}

ACCESS_KEYS = {'required': BOOL, 'teamName': STRING, 'audTag': 'strings'}
IP_RULE_KEYS = {'prefix': STRING, 'ports': 'ints', 'allow': BOOL}

# `enabled` is what the Cloudflare API and dashboard send; cloudflared ignores it.
WARP_ROUTING_KEYS = {
    'enabled': BOOL,
    'connectTimeout': DURATION,
    'maxActiveFlows': UINT,
    'tcpKeepAlive': DURATION,
}

RULE_KEYS = ('hostname', 'path', 'service', 'originRequest')
CONFIG_KEYS = ('ingress', 'originRequest', 'warp-routing')

# Services that are not URLs (ingress.validateIngress).
SERVICE_HELLO_WORLD = ('hello_world', 'hello-world')
SERVICE_BASTION = 'bastion'
SERVICE_SOCKS_PROXY = 'socks-proxy'
SPECIAL_SERVICES = SERVICE_HELLO_WORLD + (SERVICE_BASTION, SERVICE_SOCKS_PROXY)


def validate_ingress(config):
    """Return a list of human-readable errors in a tunnel ``config`` document.

    ``config`` is the ``config`` object of a remotely managed tunnel's
    configuration (``{"ingress": [...], "originRequest": {...},
    "warp-routing": {...}}``). An empty list means cloudflared accepts it.
    """
    errors = []
    if not isinstance(config, Mapping):
        return ['the tunnel configuration must be a mapping, not %s' % _type_name(config)]

    for key in config:
        if key not in CONFIG_KEYS:
            errors.append('unknown key %r in the tunnel configuration (known: %s)'
                          % (key, ', '.join(CONFIG_KEYS)))

    defaults = config.get('originRequest')
    if defaults is not None:
        errors += _check_origin_request(defaults, 'originRequest')
    if not isinstance(defaults, Mapping):
        defaults = {}

    warp = config.get('warp-routing')
    if warp is not None:
        errors += _check_object(warp, WARP_ROUTING_KEYS, 'warp-routing')

    rules = config.get('ingress')
    if rules is None or (isinstance(rules, list) and not rules):
        errors.append('the configuration has no ingress rules; at least one is required, '
                      'and the last must match everything (e.g. service: http_status:404)')
        return errors
    if not isinstance(rules, list):
        errors.append('ingress must be a list of rules, not %s' % _type_name(rules))
        return errors

    for index, rule in enumerate(rules):
        errors += _check_rule(rule, index, len(rules), defaults)
    return errors


def check_ingress(config):
    """Raise IngressError listing every problem of ``config``; return it if valid."""
    errors = validate_ingress(config)
    if errors:
        raise IngressError(errors)
    return config


# ---------------------------------------------------------------------------
# Rules

def _check_rule(rule, index, total, defaults):
    where = 'ingress rule #%d' % (index + 1)
    if not isinstance(rule, Mapping):
        return ['%s must be a mapping, not %s' % (where, _type_name(rule))]
    errors = []
    for key in rule:
        if key not in RULE_KEYS:
            errors.append('%s: unknown key %r (known: %s)' % (where, key, ', '.join(RULE_KEYS)))

    strings = {}
    for key in ('hostname', 'path', 'service'):
        value = rule.get(key)
        if value is None:
            value = ''
        elif not isinstance(value, _STR):
            errors.append('%s: %s must be a string, not %s' % (where, key, _type_name(value)))
            value = ''
        strings[key] = value
    hostname, path, service = strings['hostname'], strings['path'], strings['service']

    origin_request = rule.get('originRequest')
    if origin_request is not None:
        errors += _check_origin_request(origin_request, '%s: originRequest' % where)
    if not isinstance(origin_request, Mapping):
        origin_request = {}

    # A rule's bastionMode overrides the default; either one turns the rule
    # into a bastion whatever its service says.
    bastion_mode = origin_request.get('bastionMode')
    if bastion_mode is None:
        bastion_mode = defaults.get('bastionMode')
    errors += _check_service(service, bastion_mode is True, origin_request, where)

    access = origin_request.get('access')
    if isinstance(access, Mapping) and access.get('required') is True:
        if not access.get('teamName') and access.get('audTag'):
            errors.append('%s: originRequest.access.teamName cannot be blank when audTag is set'
                          % where)

    errors += _check_hostname(hostname, path, index, total, where)

    if path:
        problem = go_regexp_error(path)
        if problem:
            errors.append('%s: path %r is not a valid (Go RE2) regular expression: %s'
                          % (where, path, problem))
    return errors


def _check_hostname(hostname, path, index, total, where):
    errors = []
    if _go_split_host_port(hostname):
        errors.append('%s: hostname %r cannot contain a port' % (where, hostname))
    if hostname.rfind('*') > 0:
        errors.append('%s: hostname %r may only have a wildcard as its first character, '
                      'as in "*.example.com"' % (where, hostname))
    catch_all = hostname in ('', '*') and not path
    last = index == total - 1
    if last and not catch_all:
        errors.append('%s: the last ingress rule must match all URLs: it cannot have a hostname '
                      '(other than "*") or a path' % where)
    if catch_all and not last:
        errors.append('%s matches every hostname and path, so the rules after it would never '
                      'be used; only the last rule may be a catch-all' % where)
    return errors


def _go_split_host_port(hostport):
    """True where Go's net.SplitHostPort accepts hostport (i.e. finds a port)."""
    colon = hostport.rfind(':')
    if colon < 0:
        return False
    start_open, start_close = 0, 0
    if hostport[0] == '[':
        end = hostport.find(']')
        if end < 0 or end + 1 != colon:
            return False
        start_open, start_close = 1, end + 1
    elif ':' in hostport[:colon]:
        return False
    if '[' in hostport[start_open:] or ']' in hostport[start_close:]:
        return False
    return True


_STATUS_RE = re.compile(r'[+-]?[0-9]+\Z')


def _check_service(service, bastion_mode, origin_request, where):
    if service.startswith('unix:') or service.startswith('unix+tls:'):
        return []  # a socket path; cloudflared does not check it
    if service.startswith('http_status:'):
        code = service[len('http_status:'):]
        if not _STATUS_RE.match(code) or abs(int(code)) > _INT64_MAX:
            return ['%s: invalid HTTP status code in service %r' % (where, service)]
        if not 100 <= int(code) <= 999:
            return ['%s: invalid HTTP status code %d in service %r (must be 100-999)'
                    % (where, int(code), service)]
        return []
    if service in SERVICE_HELLO_WORLD:
        return []
    if service == SERVICE_SOCKS_PROXY:
        return _check_socks_ip_rules(origin_request.get('ipRules'), where)
    if service == SERVICE_BASTION or bastion_mode:
        return []
    problem = _go_url_service_error(service)
    if problem:
        return ['%s: service %r %s' % (where, service, problem)]
    return []


def _check_socks_ip_rules(ip_rules, where):
    errors = []
    if not isinstance(ip_rules, list):
        return errors  # type errors are reported by _check_origin_request
    for number, ip_rule in enumerate(ip_rules, 1):
        if not isinstance(ip_rule, Mapping):
            continue
        prefix = ip_rule.get('prefix')
        label = '%s: originRequest.ipRules[%d]' % (where, number - 1)
        if not prefix or not isinstance(prefix, _STR):
            errors.append('%s has no prefix' % label)
        elif not _go_parse_cidr(prefix):
            errors.append('%s: prefix %r is not a CIDR block' % (label, prefix))
        ports = ip_rule.get('ports') or []
        if isinstance(ports, list):
            for port in ports:
                if _is_int(port) and not 1 <= port <= 65535:
                    errors.append('%s: port %d is not between 1 and 65535' % (label, port))
    return errors


def _go_parse_cidr(text):
    addr, sep, bits = text.partition('/')
    if not sep or not bits or any(c not in '0123456789' for c in bits):
        return False
    if '%' in addr:
        return False  # zones are refused
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return int(bits) <= ip.max_prefixlen


# ---------------------------------------------------------------------------
# URL services: Go's net/url.Parse, then "must have a scheme and a hostname
# and no path" (ingress.validateIngress).

_SCHEME_FIRST = frozenset('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ')
_SCHEME_REST = _SCHEME_FIRST | frozenset('0123456789+-.')
_HEX = frozenset('0123456789abcdefABCDEF')
_ALNUM = frozenset('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789')
_HOST_OK = _ALNUM | frozenset("-_.~!$&'()*+,;=:[]<>\"")
_USERINFO_OK = _ALNUM | frozenset("-._:~!$&'()*+,;=%@")


class _URLError(Exception):
    pass


def _go_url_service_error(service):
    """Return why cloudflared refuses ``service`` as an origin URL, or None."""
    try:
        scheme, host, path = _go_parse_url(service)
    except _URLError as err:
        return 'is not a valid URL: %s' % err
    if not scheme or not _go_hostname(host):
        return ('is an invalid address: it needs a scheme and a hostname '
                '(e.g. http://localhost:8080), or a special service such as '
                'http_status:404, hello_world, bastion, socks-proxy, unix:/path')
    if path:
        return ('is an invalid address: ingress rules cannot proxy to a different path on the '
                'origin (remove the path; the request path is kept)')
    return None


def _unescape(text, host_mode=False):
    """Go url.unescape validation: %XX must be well formed; in a host only
    non-ASCII bytes (or %25) may be escaped and only some ASCII is allowed."""
    i = 0
    while i < len(text):
        char = text[i]
        if char == '%':
            if i + 2 >= len(text) or text[i + 1] not in _HEX or text[i + 2] not in _HEX:
                raise _URLError('invalid URL escape %r' % text[i:i + 3])
            if host_mode and int(text[i + 1], 16) < 8 and text[i:i + 3] != '%25':
                raise _URLError('invalid URL escape %r' % text[i:i + 3])
            i += 3
            continue
        if host_mode and ord(char) < 0x80 and char not in _HOST_OK:
            raise _URLError('invalid character %r in host name' % char)
        i += 1


def _valid_optional_port(text):
    return text == '' or (text[0] == ':' and all('0' <= c <= '9' for c in text[1:]))


def _go_parse_url(raw):
    """A validating model of Go's url.Parse; returns (scheme, host, path)."""
    raw, _sep, fragment = raw.partition('#')
    if any(ord(c) < 0x20 or ord(c) == 0x7f for c in raw):
        raise _URLError('invalid control character in URL')
    if raw == '*':
        return '', '', '*'
    scheme, rest = '', raw
    for i, char in enumerate(raw):
        if char in _SCHEME_FIRST:
            continue
        if char in _SCHEME_REST:
            if i == 0:
                break
            continue
        if char == ':':
            if i == 0:
                raise _URLError('missing protocol scheme')
            scheme, rest = raw[:i].lower(), raw[i + 1:]
        break
    if rest.endswith('?') and rest.count('?') == 1:
        rest = rest[:-1]
    else:
        rest = rest.partition('?')[0]
    host = ''
    if not rest.startswith('/'):
        if scheme:
            return scheme, '', ''  # opaque: no host
        if ':' in rest.partition('/')[0]:
            raise _URLError('first path segment in URL cannot contain colon')
    if (scheme or not rest.startswith('///')) and rest.startswith('//'):
        authority, slash, tail = rest[2:].partition('/')
        rest = slash + tail
        host = _go_parse_authority(scheme, authority)
    _unescape(rest)
    if fragment:
        _unescape(fragment)
    return scheme, host, rest


def _go_parse_authority(scheme, authority):
    at = authority.rfind('@')
    host = _go_parse_host(scheme, authority[at + 1:])
    if at >= 0:
        userinfo = authority[:at]
        if any(c not in _USERINFO_OK for c in userinfo):
            raise _URLError('invalid userinfo')
        for part in userinfo.split(':', 1):
            _unescape(part)
    return host


def _go_parse_host(scheme, host):
    open_bracket = host.rfind('[')
    if open_bracket > 0:
        raise _URLError('invalid IP-literal')
    if open_bracket == 0:
        close = host.rfind(']')
        if close < 0:
            raise _URLError("missing ']' in host")
        colon_port = host[close + 1:]
        if not _valid_optional_port(colon_port):
            raise _URLError('invalid port %r after host' % colon_port)
        literal = host[1:close]
        zone = literal.find('%25')
        if zone >= 0:
            _unescape(literal[:zone], host_mode=True)
            _unescape(literal[zone:], host_mode=True)
            address = _percent_decode(literal[:zone]) + '%' + _percent_decode(literal[zone + 3:])
        else:
            _unescape(literal, host_mode=True)
            address = _percent_decode(literal)
        try:
            if '%' in address:
                base, _pct, scope = address.partition('%')
                if not scope:
                    raise ValueError(address)
                ipaddress.IPv6Address(base)
            else:
                ipaddress.IPv6Address(address)
        except ValueError:
            raise _URLError('invalid host: %r is not an IPv6 address' % address)
        return host
    first = host.find(':')
    if first >= 0:
        # Go 1.26 (urlstrictcolons=1) keeps the first colon for http(s) URLs;
        # other schemes may carry host lists, so the last colon counts.
        index = first if scheme in ('http', 'https') else host.rfind(':')
        colon_port = host[index:]
        if not _valid_optional_port(colon_port):
            raise _URLError('invalid port %r after host' % colon_port)
    _unescape(host, host_mode=True)
    return host


def _percent_decode(text):
    return re.sub('%([0-9a-fA-F]{2})', lambda m: chr(int(m.group(1), 16)), text)


def _go_hostname(host):
    """url.URL.Hostname(): host without its port and brackets."""
    colon = host.rfind(':')
    if colon >= 0 and _valid_optional_port(host[colon:]):
        host = host[:colon]
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    return host


# ---------------------------------------------------------------------------
# originRequest / warp-routing value types, as Go's encoding/json decodes them

def _type_name(value):
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'a boolean'
    if isinstance(value, int):
        return 'an integer'
    if isinstance(value, float):
        return 'a number with a fraction'
    if isinstance(value, _STR):
        return 'a string'
    if isinstance(value, Mapping):
        return 'a mapping'
    if isinstance(value, (list, tuple)):
        return 'a list'
    return type(value).__name__


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_value(kind, value, label):
    """Errors for one typed value; None (JSON null) always means "unset"."""
    if value is None:
        return []
    if kind == DURATION:
        if not _is_int(value) or not _INT64_MIN <= value <= _INT64_MAX:
            return ['%s must be a whole number of seconds (remote configuration), not %s%s'
                    % (label, _type_name(value),
                       ' such as %r' % value if isinstance(value, _STR + (float,)) else '')]
        return []
    if kind == BOOL:
        if not isinstance(value, bool):
            return ['%s must be a boolean, not %s' % (label, _type_name(value))]
        return []
    if kind == STRING:
        if not isinstance(value, _STR):
            return ['%s must be a string, not %s' % (label, _type_name(value))]
        return []
    if kind == INT:
        if not _is_int(value) or not _INT64_MIN <= value <= _INT64_MAX:
            return ['%s must be an integer, not %s' % (label, _type_name(value))]
        return []
    if kind == UINT:
        if not _is_int(value) or not 0 <= value <= _UINT64_MAX:
            return ['%s must be a non-negative integer, not %s' % (label, _type_name(value))]
        return []
    if kind in ('strings', 'ints'):
        if not isinstance(value, list):
            return ['%s must be a list, not %s' % (label, _type_name(value))]
        item_kind = STRING if kind == 'strings' else INT
        errors = []
        for number, item in enumerate(value):
            if item is None:
                errors.append('%s[%d] must not be null' % (label, number))
            else:
                errors += _check_value(item_kind, item, '%s[%d]' % (label, number))
        return errors
    if kind == ACCESS:
        return _check_object(value, ACCESS_KEYS, label)
    if kind == IP_RULES:
        if not isinstance(value, list):
            return ['%s must be a list, not %s' % (label, _type_name(value))]
        errors = []
        for number, item in enumerate(value):
            errors += _check_object(item, IP_RULE_KEYS, '%s[%d]' % (label, number))
        return errors
    raise AssertionError(kind)  # pragma: no cover


def _check_object(value, schema, label):
    if not isinstance(value, Mapping):
        return ['%s must be a mapping, not %s' % (label, _type_name(value))]
    errors = []
    for key, item in value.items():
        if key not in schema:
            errors.append('%s: unknown key %r (known: %s)' % (label, key, ', '.join(sorted(schema))))
            continue
        errors += _check_value(schema[key], item, '%s.%s' % (label, key))
    return errors


def _check_origin_request(value, label):
    return _check_object(value, ORIGIN_REQUEST_KEYS, label)


# ---------------------------------------------------------------------------
# Path: cloudflared compiles it with Go's regexp.Compile (RE2 syntax, Perl
# flags). Python's re accepts a different language (lookarounds and
# backreferences, but not \z, \Q...\E, \pL or (?U)), so this is a syntax
# checker that follows Go's regexp/syntax parser rather than re.compile().

_POSIX_CLASSES = frozenset(
    '[:%s%s:]' % (neg, name) for neg in ('', '^') for name in (
        'alnum', 'alpha', 'ascii', 'blank', 'cntrl', 'digit', 'graph', 'lower',
        'print', 'punct', 'space', 'upper', 'word', 'xdigit'))

_UNICODE_CATEGORIES = frozenset((
    'C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps '
    'S Sc Sk Sm So Z Zl Zp Zs Cn').split())
_UNICODE_CATEGORY_ALIASES = (
    'Cased_Letter Close_Punctuation Combining_Mark Connector_Punctuation Control '
    'Currency_Symbol Dash_Punctuation Decimal_Number Enclosing_Mark Final_Punctuation Format '
    'Initial_Punctuation Letter Letter_Number Line_Separator Lowercase_Letter Mark Math_Symbol '
    'Modifier_Letter Modifier_Symbol Nonspacing_Mark Number Open_Punctuation Other '
    'Other_Letter Other_Number Other_Punctuation Other_Symbol Paragraph_Separator Private_Use '
    'Punctuation Separator Space_Separator Spacing_Mark Surrogate Symbol Titlecase_Letter '
    'Unassigned Uppercase_Letter cntrl digit punct').split()
# Go's unicode.Scripts (Unicode 15). Go looks names up after canonicalising
# them (see _canonical_unicode_name), which multi-word names never survive.
_UNICODE_SCRIPTS = frozenset((
    'Adlam Ahom Anatolian_Hieroglyphs Arabic Armenian Avestan Balinese Bamum '
    'Bassa_Vah Batak Bengali Bhaiksuki Bopomofo Brahmi Braille Buginese Buhid '
    'Canadian_Aboriginal Carian Caucasian_Albanian Chakma Cham Cherokee '
    'Chorasmian Common Coptic Cuneiform Cypriot Cypro_Minoan Cyrillic Deseret '
    'Devanagari Dives_Akuru Dogra Duployan Egyptian_Hieroglyphs Elbasan Elymaic '
    'Ethiopic Georgian Glagolitic Gothic Grantha Greek Gujarati Gunjala_Gondi '
    'Gurmukhi Han Hangul Hanifi_Rohingya Hanunoo Hatran Hebrew Hiragana '
    'Imperial_Aramaic Inherited Inscriptional_Pahlavi Inscriptional_Parthian '
    'Javanese Kaithi Kannada Katakana Kawi Kayah_Li Kharoshthi '
    'Khitan_Small_Script Khmer Khojki Khudawadi Lao Latin Lepcha Limbu Linear_A '
    'Linear_B Lisu Lycian Lydian Mahajani Makasar Malayalam Mandaic Manichaean '
    'Marchen Masaram_Gondi Medefaidrin Meetei_Mayek Mende_Kikakui '
    'Meroitic_Cursive Meroitic_Hieroglyphs Miao Modi Mongolian Mro Multani '
    'Myanmar Nabataean Nag_Mundari Nandinagari New_Tai_Lue Newa Nko Nushu '
    'Nyiakeng_Puachue_Hmong Ogham Ol_Chiki Old_Hungarian Old_Italic '
    'Old_North_Arabian Old_Permic Old_Persian Old_Sogdian Old_South_Arabian '
    'Old_Turkic Old_Uyghur Oriya Osage Osmanya Pahawh_Hmong Palmyrene Pau_Cin_Hau '
    'Phags_Pa Phoenician Psalter_Pahlavi Rejang Runic Samaritan Saurashtra '
    'Sharada Shavian Siddham SignWriting Sinhala Sogdian Sora_Sompeng Soyombo '
    'Sundanese Syloti_Nagri Syriac Tagalog Tagbanwa Tai_Le Tai_Tham Tai_Viet '
    'Takri Tamil Tangsa Tangut Telugu Thaana Thai Tibetan Tifinagh Tirhuta Toto '
    'Ugaritic Vai Vithkuqi Wancho Warang_Citi Yezidi Yi Zanabazar_Square').split())


def _canonical_unicode_name(name):
    out = []
    first = True
    for char in name:
        if char in '_- ':
            continue
        if first:
            out.append(char.upper() if 'a' <= char <= 'z' else char)
            first = False
        else:
            out.append(char.lower() if 'A' <= char <= 'Z' else char)
    return ''.join(out)


_UNICODE_NAMES = (frozenset(('Any', 'Assigned', 'Ascii', 'Lc')) | _UNICODE_CATEGORIES
                  | _UNICODE_SCRIPTS
                  | frozenset(_canonical_unicode_name(n) for n in _UNICODE_CATEGORY_ALIASES))

_MAX_REPEAT = 1000


class _RegexpError(Exception):
    pass


class _Node(object):
    """A parse-tree node, kept only as far as Go's repeat-size check needs."""

    __slots__ = ('kind', 'min', 'max', 'subs')

    def __init__(self, kind, subs=(), min_=0, max_=0):
        self.kind = kind          # 'leaf', 'repeat', 'group', '(' or '|'
        self.min = min_
        self.max = max_
        self.subs = list(subs)


def _repeat_is_valid(node, limit):
    if node.kind == 'repeat':
        count = node.max
        if count == 0:
            return True
        if count < 0:
            count = node.min
        if count > limit:
            return False
        if count > 0:
            limit //= count
    return all(_repeat_is_valid(sub, limit) for sub in node.subs)


def go_regexp_error(pattern):
    """Return why Go's regexp.Compile refuses ``pattern``, or None if it accepts it."""
    try:
        _GoRegexpParser(pattern).parse()
    except _RegexpError as err:
        return str(err)
    return None


class _GoRegexpParser(object):

    def __init__(self, pattern):
        self.pattern = pattern
        self.stack = []

    def _push_leaf(self):
        self.stack.append(_Node('leaf'))

    def _collapse(self):
        """Fold the nodes above the innermost '(' into one group node."""
        i = len(self.stack)
        while i > 0 and self.stack[i - 1].kind != '(':
            i -= 1
        subs = [n for n in self.stack[i:] if n.kind != '|']
        del self.stack[i:]
        return _Node('group', subs)

    def parse(self):
        t = self.pattern
        last_repeat = False
        while t:
            repeat = False
            char = t[0]
            if char == '(':
                if t.startswith('(?'):
                    t = self._perl_flags(t)
                else:
                    self.stack.append(_Node('('))
                    t = t[1:]
            elif char == '|':
                group = self._collapse()
                self.stack.append(group)
                self.stack.append(_Node('|'))
                t = t[1:]
            elif char == ')':
                group = self._collapse()
                if not self.stack:
                    raise _RegexpError('unexpected ): %r' % self.pattern)
                self.stack.pop()  # the '('
                self.stack.append(group)
                t = t[1:]
            elif char == '[':
                t = self._char_class(t)
                self._push_leaf()
            elif char in '*+?':
                t = self._repeat(t[1:], 0, 0, t[:1], last_repeat)
                repeat = True
            elif char == '{':
                parsed = self._parse_repeat(t)
                if parsed is None:
                    self._push_leaf()  # a literal '{'
                    t = t[1:]
                else:
                    low, high, after = parsed
                    text = t[:len(t) - len(after)]
                    if low > _MAX_REPEAT or high > _MAX_REPEAT or (0 <= high < low):
                        raise _RegexpError('invalid repeat count: %r' % text)
                    t = self._repeat(after, low, high, text, last_repeat)
                    repeat = True
            elif char == '\\':
                t = self._escape_atom(t)
            else:
                self._push_leaf()  # literals, '.', '^', '$'
                t = t[1:]
            last_repeat = repeat
        self._collapse()
        if self.stack:
            raise _RegexpError('missing closing ): %r' % self.pattern)

    def _repeat(self, after, low, high, text, last_repeat):
        if after.startswith('?'):
            after = after[1:]
            text += '?'
        if last_repeat:
            raise _RegexpError('invalid nested repetition operator: %r' % text)
        if not self.stack or self.stack[-1].kind in ('(', '|'):
            raise _RegexpError('missing argument to repetition operator: %r' % text)
        node = _Node('repeat', [self.stack[-1]], low, high)
        self.stack[-1] = node
        if text[0] == '{' and (low >= 2 or high >= 2) and not _repeat_is_valid(node, _MAX_REPEAT):
            raise _RegexpError('invalid repeat count: %r' % text)
        return after

    @staticmethod
    def _parse_int(s):
        if not s or not '0' <= s[0] <= '9':
            return None
        if len(s) >= 2 and s[0] == '0' and '0' <= s[1] <= '9':
            return None
        i = 0
        while i < len(s) and '0' <= s[i] <= '9':
            i += 1
        return int(s[:i]), s[i:]

    def _parse_repeat(self, s):
        s = s[1:]
        parsed = self._parse_int(s)
        if parsed is None:
            return None
        low, s = parsed
        if not s:
            return None
        if s[0] != ',':
            high = low
        else:
            s = s[1:]
            if not s:
                return None
            if s[0] == '}':
                high = -1
            else:
                parsed = self._parse_int(s)
                if parsed is None:
                    return None
                high, s = parsed
        if not s or s[0] != '}':
            return None
        return low, high, s[1:]

    def _perl_flags(self, t):
        if (len(t) > 4 and t[2] == 'P' and t[3] == '<') or (len(t) > 3 and t[2] == '<'):
            start = 4 if t[2] == 'P' else 3
            end = t.find('>')
            if end < 0:
                raise _RegexpError('invalid named capture: %r' % t)
            name = t[start:end]
            if not name or any(c != '_' and c not in _ALNUM for c in name):
                raise _RegexpError('invalid named capture: %r' % t[:end + 1])
            self.stack.append(_Node('('))
            return t[end + 1:]
        rest = t[2:]
        sign = 1
        saw_flag = False
        while rest:
            char, rest = rest[0], rest[1:]
            if char in 'imsU':
                saw_flag = True
            elif char == '-':
                if sign < 0:
                    break
                sign = -1
                saw_flag = False
            elif char in ':)':
                if sign < 0 and not saw_flag:
                    break
                if char == ':':
                    self.stack.append(_Node('('))
                return rest
            else:
                break
        raise _RegexpError('invalid or unsupported Perl syntax: %r'
                           % t[:len(t) - len(rest)])

    def _escape_atom(self, t):
        if len(t) >= 2:
            nxt = t[1]
            if nxt in 'AbBz':
                self._push_leaf()
                return t[2:]
            if nxt == 'C':
                raise _RegexpError('invalid escape sequence: %r' % t[:2])
            if nxt == 'Q':
                literal, sep, rest = t[2:].partition('\\E')
                if literal:
                    self._push_leaf()
                return rest
        rest = self._unicode_class(t)
        if rest is None:
            rest = self._perl_class(t)
        if rest is None:
            rest = self._escape(t)
        self._push_leaf()
        return rest

    @staticmethod
    def _perl_class(t):
        if len(t) >= 2 and t[0] == '\\' and t[1] in 'dDsSwW':
            return t[2:]
        return None

    @staticmethod
    def _unicode_class(t):
        if len(t) < 2 or t[0] != '\\' or t[1] not in 'pP':
            return None
        if len(t) > 2 and t[2] == '{':
            end = t.find('}')
            if end < 0:
                raise _RegexpError('invalid character class range: %r' % t)
            seq, rest, name = t[:end + 1], t[end + 1:], t[3:end]
        else:
            seq, rest, name = t[:3], t[3:], t[2:3]
        if name.startswith('^'):
            name = name[1:]
        if _canonical_unicode_name(name) not in _UNICODE_NAMES:
            raise _RegexpError('invalid character class range: %r' % seq)
        return rest

    @staticmethod
    def _escape(t):
        """Go parseEscape: one escaped character; returns the rest."""
        rest = t[1:]
        if not rest:
            raise _RegexpError('trailing backslash at end of expression')
        char, rest = rest[0], rest[1:]
        if ord(char) < 0x80 and char not in _ALNUM:
            return rest
        if char in '1234567' and (not rest or not '0' <= rest[0] <= '7'):
            pass  # a backreference: unsupported
        elif char in '01234567':
            for _digit in range(2):
                if not rest or not '0' <= rest[0] <= '7':
                    break
                rest = rest[1:]
            return rest
        elif char == 'x' and rest:
            if rest[0] == '{':
                end = rest.find('}')
                digits = rest[1:end] if end >= 0 else ''
                if digits and all(c in _HEX for c in digits) and int(digits, 16) <= 0x10FFFF:
                    return rest[end + 1:]
            elif len(rest) >= 2 and rest[0] in _HEX and rest[1] in _HEX:
                return rest[2:]
        elif char in 'afnrtv':
            return rest
        raise _RegexpError('invalid escape sequence: %r' % t[:len(t) - len(rest)])

    def _char_class(self, s):
        t = s[1:]
        if t.startswith('^'):
            t = t[1:]
        first = True
        while not t or t[0] != ']' or first:
            first = False
            if len(t) > 2 and t.startswith('[:'):
                end = t.find(':]', 2)
                if end >= 0:
                    name = t[:end + 2]
                    if name not in _POSIX_CLASSES:
                        raise _RegexpError('invalid character class range: %r' % name)
                    t = t[end + 2:]
                    continue
            rest = self._unicode_class(t)
            if rest is None:
                rest = self._perl_class(t)
            if rest is not None:
                t = rest
                continue
            start = t
            low, t = self._class_char(t, s)
            if len(t) >= 2 and t[0] == '-' and t[1] != ']':
                high, t = self._class_char(t[1:], s)
                if high < low:
                    raise _RegexpError('invalid character class range: %r'
                                       % start[:len(start) - len(t)])
        return t[1:]

    def _class_char(self, t, whole):
        if not t:
            raise _RegexpError('missing closing ]: %r' % whole)
        if t[0] == '\\':
            rest = self._escape(t)
            return _escaped_value(t[:len(t) - len(rest)]), rest
        return ord(t[0]), t[1:]


def _escaped_value(escape):
    """Code point of a single-character escape accepted by _escape()."""
    body = escape[1:]
    if body[0] in '01234567':
        return int(body, 8)
    if body[0] == 'x':
        return int(body[1:].strip('{}'), 16)
    simple = {'a': 7, 'f': 12, 'n': 10, 'r': 13, 't': 9, 'v': 11}
    if body in simple:
        return simple[body]
    return ord(body)
