/*
 * The batch decoders of records.py (decode_mail, decode_dns) in C.
 *
 * Each line still goes through msgspec's typed decoding, the checked Python path for a line the
 * Structs refuse, and the same parse_ts; what is here is what records.py's ``_decode``,
 * ``_mail_record`` and ``_dns_record`` do around those calls for the usual line (the loop, the
 * cached timestamp, names folded, strings cut, the record built), without an interpreted
 * bytecode a field. Everything unusual (a timestamp not in the caches, an rcode of another
 * spelling, a sender or host not seen yet, a name that is not ASCII) calls the very Python that
 * records.py runs, so there is one definition of every rule; tests/test_decoder_paths.py holds
 * this module and the Python loop together, line for line and float for float.
 *
 * One configuration per process (``configure``, called once by records.py at import).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

/* ---------------------------------------------------------------- configuration */

static PyObject *Rejected;          /* records.Rejected */
static PyObject *checked;           /* records._checked(raw, validate) */
static PyObject *parse_ts;          /* records.parse_ts(value) */
static PyObject *minute_epoch;      /* dict: "YYYY-MM-DDTHH:MM" -> float */
static PyObject *utc_fraction;      /* dict: tail -> float */
static Py_ssize_t limit;            /* MAX_LINE_BYTES */
static Py_ssize_t cut;              /* MAX_FIELD_CHARS */
static double ms_threshold;         /* EPOCH_MS_THRESHOLD */
static double max_epoch_s;          /* MAX_EPOCH_S */
static PyObject *zero;              /* 0 */
static PyObject *normalize_py;      /* normalize_name, for a name that is not ASCII */
static PyObject *nodata;            /* "NODATA" */

static PyObject *dns_decode_line, *dns_validate, *dns_type, *outcome_of, *outcome_of_rcode,
    *upper_of, *host_of, *fold_upper, *fold_host;
static PyObject *mail_decode_line, *mail_validate, *mail_type, *domains, *domain_of, *lower_of,
    *fold_lower;

static PyObject *s_ts, *s_qname, *s_qtype, *s_rcode, *s_answers, *s_resolver, *s_client,
    *s_message_id, *s_status, *s_sender, *s_tenant, *s_server, *s_category, *s_subject,
    *s_status_code, *s_dns_lookups, *s_dns_outcome, *s_detail, *s_reason, *s_upper;

static int configured = 0;

/* Where a decoded line's fields are: msgspec Structs keep them in slots, as member descriptors
 * say; read there, a field costs a load instead of an attribute look-up. -1: look it up. */
enum { F_TS, F_QNAME, F_QTYPE, F_RCODE, F_ANSWERS, F_RESOLVER, F_CLIENT, F_MESSAGE_ID, F_STATUS,
       F_SENDER, F_TENANT, F_SERVER, F_CATEGORY, F_SUBJECT, F_STATUS_CODE, F_DNS_LOOKUPS,
       F_DNS_OUTCOME, F_DETAIL, N_FIELDS };
static PyObject **field_names[N_FIELDS] = {
    &s_ts, &s_qname, &s_qtype, &s_rcode, &s_answers, &s_resolver, &s_client, &s_message_id,
    &s_status, &s_sender, &s_tenant, &s_server, &s_category, &s_subject, &s_status_code,
    &s_dns_lookups, &s_dns_outcome, &s_detail,
};
static PyTypeObject *dns_line_type, *mail_line_type, *lookup_type;
static Py_ssize_t dns_offsets[N_FIELDS], mail_offsets[N_FIELDS], lookup_offsets[N_FIELDS];
static Py_ssize_t record_offsets[N_FIELDS];      /* of dns_type: DnsRecord */

static void
find_offsets(PyTypeObject *type, Py_ssize_t *offsets)
{
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *descr = PyDict_GetItem(type->tp_dict, *field_names[i]);
        offsets[i] = -1;
        if (descr != NULL && Py_TYPE(descr) == &PyMemberDescr_Type) {
            PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
            if (member->type == T_OBJECT_EX || member->type == T_OBJECT)
                offsets[i] = member->offset;
        }
    }
}

/* Field ``i`` of ``obj`` (a new reference): from its slot when ``obj`` is exactly ``type``. */
static inline PyObject *
field(PyObject *obj, PyTypeObject *type, const Py_ssize_t *offsets, int i)
{
    if (Py_TYPE(obj) == type && offsets[i] >= 0) {
        PyObject *value = *(PyObject **)((char *)obj + offsets[i]);
        if (value != NULL) {
            Py_INCREF(value);
            return value;
        }
    }
    return PyObject_GetAttr(obj, *field_names[i]);
}

static int
take(PyObject *kwargs, const char *name, PyObject **slot)
{
    PyObject *value = PyDict_GetItemString(kwargs, name);
    if (value == NULL) {
        PyErr_Format(PyExc_TypeError, "configure: %s is missing", name);
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(*slot, value);
    return 0;
}

static int
take_dict(PyObject *kwargs, const char *name, PyObject **slot)
{
    if (take(kwargs, name, slot) < 0)
        return -1;
    if (!PyDict_CheckExact(*slot)) {
        PyErr_Format(PyExc_TypeError, "configure: %s must be a dict", name);
        return -1;
    }
    return 0;
}

static PyObject *
configure(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *number = NULL;
    if (kwargs == NULL || PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "configure takes keyword arguments only");
        return NULL;
    }
    if (take(kwargs, "Rejected", &Rejected) < 0 || take(kwargs, "checked", &checked) < 0
        || take(kwargs, "parse_ts", &parse_ts) < 0
        || take_dict(kwargs, "minute_epoch", &minute_epoch) < 0
        || take_dict(kwargs, "utc_fraction", &utc_fraction) < 0
        || take(kwargs, "normalize_name", &normalize_py) < 0
        || take(kwargs, "dns_decode_line", &dns_decode_line) < 0
        || take(kwargs, "dns_validate", &dns_validate) < 0
        || take(kwargs, "dns_type", &dns_type) < 0
        || take_dict(kwargs, "outcome_of", &outcome_of) < 0
        || take(kwargs, "outcome_of_rcode", &outcome_of_rcode) < 0
        || take_dict(kwargs, "upper_of", &upper_of) < 0
        || take_dict(kwargs, "host_of", &host_of) < 0
        || take(kwargs, "fold_upper", &fold_upper) < 0
        || take(kwargs, "fold_host", &fold_host) < 0
        || take(kwargs, "mail_decode_line", &mail_decode_line) < 0
        || take(kwargs, "mail_validate", &mail_validate) < 0
        || take(kwargs, "mail_type", &mail_type) < 0
        || take_dict(kwargs, "domains", &domains) < 0
        || take(kwargs, "domain_of", &domain_of) < 0
        || take_dict(kwargs, "lower_of", &lower_of) < 0
        || take(kwargs, "fold_lower", &fold_lower) < 0)
        return NULL;
    PyObject *types[3] = {NULL, NULL, NULL};
    if (take(kwargs, "dns_line", &types[0]) < 0 || take(kwargs, "mail_line", &types[1]) < 0
        || take(kwargs, "lookup", &types[2]) < 0)
        goto bad_types;
    for (int i = 0; i < 3; i++) {
        if (!PyType_Check(types[i])) {
            PyErr_SetString(PyExc_TypeError, "configure: dns_line, mail_line, lookup are types");
            goto bad_types;
        }
    }
    Py_XSETREF(dns_line_type, (PyTypeObject *)types[0]);
    Py_XSETREF(mail_line_type, (PyTypeObject *)types[1]);
    Py_XSETREF(lookup_type, (PyTypeObject *)types[2]);
    find_offsets(dns_line_type, dns_offsets);
    find_offsets(mail_line_type, mail_offsets);
    find_offsets(lookup_type, lookup_offsets);
    if (!PyType_Check(dns_type)) {
        PyErr_SetString(PyExc_TypeError, "configure: dns_type is a type");
        return NULL;
    }
    find_offsets((PyTypeObject *)dns_type, record_offsets);
    if (take(kwargs, "limit", &number) < 0)
        return NULL;
    limit = PyLong_AsSsize_t(number);
    Py_CLEAR(number);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (take(kwargs, "cut", &number) < 0)
        return NULL;
    cut = PyLong_AsSsize_t(number);
    Py_CLEAR(number);
    if (cut == -1 && PyErr_Occurred())
        return NULL;
    if (take(kwargs, "ms_threshold", &number) < 0)
        return NULL;
    ms_threshold = PyFloat_AsDouble(number);
    Py_CLEAR(number);
    if (ms_threshold == -1.0 && PyErr_Occurred())
        return NULL;
    if (take(kwargs, "max_epoch_s", &number) < 0)
        return NULL;
    max_epoch_s = PyFloat_AsDouble(number);
    Py_CLEAR(number);
    if (max_epoch_s == -1.0 && PyErr_Occurred())
        return NULL;
    configured = 1;
    Py_RETURN_NONE;
bad_types:
    for (int i = 0; i < 3; i++)
        Py_XDECREF(types[i]);
    return NULL;
}

/* ---------------------------------------------------------------- strings */

static inline int
truthy(PyObject *value)
{
    if (value == Py_None)
        return 0;
    if (PyUnicode_CheckExact(value))
        return PyUnicode_GET_LENGTH(value) > 0;
    return PyObject_IsTrue(value);
}

/* value[:n] of a str (a new reference). */
static PyObject *
head(PyObject *value, Py_ssize_t n)
{
    if (PyUnicode_CheckExact(value) && PyUnicode_GET_LENGTH(value) <= n) {
        Py_INCREF(value);
        return value;
    }
    return PySequence_GetSlice(value, 0, n);
}

/* ``value and value[:n]``: None or "" as they are. */
static PyObject *
head_or_falsy(PyObject *value, Py_ssize_t n)
{
    int yes = truthy(value);
    if (yes < 0)
        return NULL;
    if (!yes) {
        Py_INCREF(value);
        return value;
    }
    return head(value, n);
}

/* ``value[:n] if value else None`` */
static PyObject *
head_or_none(PyObject *value, Py_ssize_t n)
{
    int yes = truthy(value);
    if (yes < 0)
        return NULL;
    if (!yes)
        Py_RETURN_NONE;
    return head(value, n);
}

/* normalize_name: ``name.lower().rstrip(".")[:cut]``; ASCII here, anything else in Python. */
static PyObject *
normalize(PyObject *name)
{
    if (!PyUnicode_CheckExact(name) || !PyUnicode_IS_ASCII(name))
        return PyObject_CallOneArg(normalize_py, name);
    const Py_UCS1 *data = PyUnicode_1BYTE_DATA(name);
    Py_ssize_t length = PyUnicode_GET_LENGTH(name), end = length, i;
    int upper = 0;
    while (end > 0 && data[end - 1] == '.')
        end--;
    if (end > cut)
        end = cut;
    for (i = 0; i < end; i++) {
        if (data[i] >= 'A' && data[i] <= 'Z') {
            upper = 1;
            break;
        }
    }
    if (!upper && end == length) {
        Py_INCREF(name);
        return name;
    }
    PyObject *folded = PyUnicode_New(end, 127);
    if (folded == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(folded);
    for (i = 0; i < end; i++) {
        Py_UCS1 c = data[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (Py_UCS1)(c + 32) : c;
    }
    return folded;
}

/* ``value.upper()``: ASCII here, anything else in Python. */
static PyObject *
upper(PyObject *value)
{
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value))
        return PyObject_CallMethodNoArgs(value, s_upper);
    const Py_UCS1 *data = PyUnicode_1BYTE_DATA(value);
    Py_ssize_t length = PyUnicode_GET_LENGTH(value), i;
    PyObject *folded = PyUnicode_New(length, 127);
    if (folded == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(folded);
    for (i = 0; i < length; i++) {
        Py_UCS1 c = data[i];
        out[i] = (c >= 'a' && c <= 'z') ? (Py_UCS1)(c - 32) : c;
    }
    return folded;
}

/* ``(cache.get(value) or fold(value)) if value else None``: a folded spelling, cached. */
static PyObject *
folded(PyObject *value, PyObject *cache, PyObject *fold)
{
    int yes = truthy(value);
    if (yes < 0)
        return NULL;
    if (!yes)
        Py_RETURN_NONE;
    PyObject *found = PyDict_GetItemWithError(cache, value);
    if (found != NULL) {
        yes = truthy(found);
        if (yes < 0)
            return NULL;
        if (yes) {
            Py_INCREF(found);
            return found;
        }
    }
    else if (PyErr_Occurred())
        return NULL;
    return PyObject_CallOneArg(fold, value);
}

/* ---------------------------------------------------------------- timestamps */

/* The ``ts`` of a decoded line as epoch seconds: parse_ts's usual cases inlined (a cached
 * minute, the seconds, a cached UTC tail: ``minute + second + fraction`` summed in the order
 * parse_ts sums them; a number as epoch seconds or milliseconds), anything else (an offset, a
 * minute or tail not seen yet, a time out of range: the rejection) by parse_ts itself. */
/* The last minute found in minute_epoch, by its 16 characters: a log's lines come minute by
 * minute, so most lines skip the slice and the look-up. (A minute once accepted stays right
 * when minute_epoch is emptied.) */
static char last_minute[16];
static double last_minute_epoch;
static int have_minute = 0;

static PyObject *
line_ts(PyObject *line, PyTypeObject *type, const Py_ssize_t *offsets)
{
    PyObject *ts = field(line, type, offsets, F_TS), *result = NULL;
    if (ts == NULL)
        return NULL;
    if (PyUnicode_CheckExact(ts) && PyUnicode_IS_ASCII(ts) && PyUnicode_GET_LENGTH(ts) >= 19) {
        const Py_UCS1 *data = PyUnicode_1BYTE_DATA(ts);
        Py_ssize_t length = PyUnicode_GET_LENGTH(ts);
        int second = (data[17] - '0') * 10 + (data[18] - '0');
        if (data[16] == ':' && data[17] >= '0' && data[17] <= '9' && data[18] >= '0'
                && data[18] <= '9' && second <= 60) {
            int found = have_minute && memcmp(last_minute, data, 16) == 0;
            if (!found) {
                PyObject *key = PyUnicode_Substring(ts, 0, 16);
                if (key == NULL)
                    goto done;
                PyObject *minute = PyDict_GetItemWithError(minute_epoch, key);
                Py_DECREF(key);
                if (minute == NULL && PyErr_Occurred())
                    goto done;
                if (minute != NULL && PyFloat_CheckExact(minute)) {
                    memcpy(last_minute, data, 16);
                    last_minute_epoch = PyFloat_AS_DOUBLE(minute);
                    have_minute = found = 1;
                }
            }
            if (found) {
                double whole = last_minute_epoch + (double)(second < 59 ? second : 59);
                PyObject *tail = PyUnicode_Substring(ts, 19, length);
                if (tail == NULL)
                    goto done;
                PyObject *fraction = PyDict_GetItemWithError(utc_fraction, tail);
                Py_DECREF(tail);
                if (fraction == NULL && PyErr_Occurred())
                    goto done;
                if (fraction != NULL && PyFloat_CheckExact(fraction)) {
                    result = PyFloat_FromDouble(whole + PyFloat_AS_DOUBLE(fraction));
                    goto done;
                }
            }
        }
    }
    else if (PyFloat_CheckExact(ts)) {
        double value = PyFloat_AS_DOUBLE(ts);
        if (0 <= value && value <= ms_threshold) {
            Py_INCREF(ts);
            result = ts;
            goto done;
        }
        if (value > ms_threshold)
            value /= 1000.0;
        if (0 <= value && value <= max_epoch_s) {
            result = PyFloat_FromDouble(value);
            goto done;
        }
    }
    result = PyObject_CallOneArg(parse_ts, ts);
done:
    Py_DECREF(ts);
    return result;
}

/* ---------------------------------------------------------------- records */

#define GET(var, i)                                     \
    var = field(line, LINE_TYPE, LINE_OFFSETS, i);      \
    if (var == NULL)                                    \
        goto fail;

#define LINE_TYPE dns_line_type
#define LINE_OFFSETS dns_offsets
static PyObject *
dns_record(PyObject *line, PyObject *ts)
{
    PyObject *rcode = NULL, *answers = NULL, *qname = NULL, *qtype = NULL, *resolver = NULL,
             *client = NULL, *record = NULL;
    PyObject *args[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    GET(rcode, F_RCODE);
    GET(answers, F_ANSWERS);
    GET(qname, F_QNAME);
    GET(qtype, F_QTYPE);
    GET(resolver, F_RESOLVER);
    GET(client, F_CLIENT);
    PyObject *outcome = PyDict_GetItemWithError(outcome_of, rcode);
    if (outcome == NULL) {
        if (PyErr_Occurred())
            goto fail;
        /* another spelling, or not an rcode of the contract */
        PyObject *count;
        if (PyList_Check(answers))
            count = PyLong_FromSsize_t(PyList_GET_SIZE(answers));
        else {
            Py_INCREF(answers);
            count = answers;
        }
        if (count == NULL)
            goto fail;
        args[3] = PyObject_CallFunctionObjArgs(outcome_of_rcode, rcode, count, NULL);
        Py_DECREF(count);
        if (args[3] == NULL)
            goto fail;
    }
    else {
        int none = 0;
        if (PyUnicode_Check(outcome) && PyUnicode_CompareWithASCIIString(outcome, "NOERROR") == 0) {
            if (PyList_Check(answers))
                none = PyList_GET_SIZE(answers) == 0;
            else {
                none = PyObject_RichCompareBool(answers, zero, Py_EQ);
                if (none < 0)
                    goto fail;
            }
        }
        args[3] = none ? nodata : outcome;
        Py_INCREF(args[3]);
    }
    Py_INCREF(ts);
    args[0] = ts;
    if ((args[1] = normalize(qname)) == NULL)
        goto fail;
    if ((args[2] = folded(qtype, upper_of, fold_upper)) == NULL)
        goto fail;
    if ((args[4] = head_or_none(resolver, cut)) == NULL)
        goto fail;
    if ((args[5] = folded(client, host_of, fold_host)) == NULL)
        goto fail;
    record = PyObject_Vectorcall(dns_type, args, 6, NULL);
fail:
    for (int i = 0; i < 6; i++)
        Py_XDECREF(args[i]);
    Py_XDECREF(rcode);
    Py_XDECREF(answers);
    Py_XDECREF(qname);
    Py_XDECREF(qtype);
    Py_XDECREF(resolver);
    Py_XDECREF(client);
    return record;
}

/* A mail line's dns_lookups: None, [] or [(normalize_name(qname), qtype.upper() or None)]. */
static PyObject *
mail_lookups(PyObject *lookups)
{
    if (lookups == Py_None)
        Py_RETURN_NONE;
    PyObject *items = PySequence_Fast(lookups, "dns_lookups is not a sequence");
    if (items == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    PyObject *result = PyList_New(n);
    if (result == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *lookup = PySequence_Fast_GET_ITEM(items, i);
        PyObject *qname = field(lookup, lookup_type, lookup_offsets, F_QNAME);
        if (qname == NULL)
            goto fail;
        PyObject *name = normalize(qname);
        Py_DECREF(qname);
        if (name == NULL)
            goto fail;
        PyObject *qtype = field(lookup, lookup_type, lookup_offsets, F_QTYPE);
        if (qtype == NULL) {
            Py_DECREF(name);
            goto fail;
        }
        PyObject *type;
        int yes = truthy(qtype);
        if (yes < 0)
            type = NULL;
        else if (yes)
            type = upper(qtype);
        else {
            type = Py_None;
            Py_INCREF(type);
        }
        Py_DECREF(qtype);
        if (type == NULL) {
            Py_DECREF(name);
            goto fail;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(name);
            Py_DECREF(type);
            goto fail;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, type);
        PyList_SET_ITEM(result, i, pair);
    }
    Py_DECREF(items);
    return result;
fail:
    Py_DECREF(items);
    Py_XDECREF(result);
    return NULL;
}

#undef LINE_TYPE
#undef LINE_OFFSETS
#define LINE_TYPE mail_line_type
#define LINE_OFFSETS mail_offsets
static PyObject *
mail_record(PyObject *line, PyObject *ts)
{
    PyObject *message_id = NULL, *status = NULL, *sender = NULL, *tenant = NULL, *server = NULL,
             *category = NULL, *subject = NULL, *status_code = NULL, *lookups = NULL,
             *dns_outcome = NULL, *detail = NULL, *record = NULL;
    PyObject *args[13] = {NULL};
    GET(message_id, F_MESSAGE_ID);
    GET(status, F_STATUS);
    GET(sender, F_SENDER);
    GET(tenant, F_TENANT);
    GET(server, F_SERVER);
    GET(category, F_CATEGORY);
    GET(subject, F_SUBJECT);
    GET(status_code, F_STATUS_CODE);
    GET(lookups, F_DNS_LOOKUPS);
    GET(dns_outcome, F_DNS_OUTCOME);
    GET(detail, F_DETAIL);
    int has_sender = truthy(sender);
    if (has_sender < 0)
        goto fail;
    if (has_sender) {
        PyObject *domain = PyDict_GetItemWithError(domains, sender);
        if (domain != NULL) {
            Py_INCREF(domain);
            args[4] = domain;
        }
        else if (PyErr_Occurred())
            goto fail;
        else if ((args[4] = PyObject_CallOneArg(domain_of, sender)) == NULL)
            goto fail;
        if ((args[3] = head(sender, cut)) == NULL)
            goto fail;
    }
    else {
        args[3] = Py_None;
        args[4] = Py_None;
        Py_INCREF(Py_None);
        Py_INCREF(Py_None);
    }
    Py_INCREF(ts);
    args[0] = ts;
    if ((args[1] = head(message_id, cut)) == NULL)
        goto fail;
    Py_INCREF(status);
    args[2] = status;
    if ((args[5] = head_or_falsy(tenant, cut)) == NULL)
        goto fail;
    if ((args[6] = folded(server, host_of, fold_host)) == NULL)
        goto fail;
    if ((args[7] = folded(category, lower_of, fold_lower)) == NULL)
        goto fail;
    Py_INCREF(subject);
    args[8] = subject;
    if ((args[9] = head_or_falsy(status_code, 32)) == NULL)
        goto fail;
    if ((args[10] = mail_lookups(lookups)) == NULL)
        goto fail;
    Py_INCREF(dns_outcome);
    args[11] = dns_outcome;
    if ((args[12] = head_or_falsy(detail, cut)) == NULL)
        goto fail;
    record = PyObject_Vectorcall(mail_type, args, 13, NULL);
fail:
    for (int i = 0; i < 13; i++)
        Py_XDECREF(args[i]);
    Py_XDECREF(message_id);
    Py_XDECREF(status);
    Py_XDECREF(sender);
    Py_XDECREF(tenant);
    Py_XDECREF(server);
    Py_XDECREF(category);
    Py_XDECREF(subject);
    Py_XDECREF(status_code);
    Py_XDECREF(lookups);
    Py_XDECREF(dns_outcome);
    Py_XDECREF(detail);
    return record;
}

#undef GET
#undef LINE_TYPE
#undef LINE_OFFSETS

/* ---------------------------------------------------------------- the batch */

typedef PyObject *(*builder)(PyObject *line, PyObject *ts);



/* One line: its record, or NULL with an exception set (Rejected, or an error to pass on). */
static PyObject *
one(PyObject *raw, PyObject *decode_line, PyObject *validate, PyTypeObject *type,
    const Py_ssize_t *offsets, builder build)
{
    Py_ssize_t size = PyObject_Length(raw);
    if (size < 0)
        return NULL;
    if (size > limit) {
        PyObject *reason = PyUnicode_FromString("too_large");
        if (reason != NULL) {
            PyErr_SetObject(Rejected, reason);
            Py_DECREF(reason);
        }
        return NULL;
    }
    PyObject *line = PyObject_CallOneArg(decode_line, raw);
    if (line == NULL) {
        /* msgspec refused it: the checked path accepts it or names why */
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return NULL;
        PyErr_Clear();
        return PyObject_CallFunctionObjArgs(checked, raw, validate, NULL);
    }
    PyObject *record = NULL, *ts = line_ts(line, type, offsets);
    if (ts != NULL) {
        record = build(line, ts);
        Py_DECREF(ts);
    }
    Py_DECREF(line);
    return record;
}

static PyObject *
decode(PyObject *args, PyObject *decode_line, PyObject *validate, PyTypeObject *type,
       const Py_ssize_t *offsets, builder build)
{
    PyObject *lines, *rejected;
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups is not configured");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO!", &lines, &PyList_Type, &rejected))
        return NULL;
    PyObject *items = PySequence_Fast(lines, "lines must be a sequence");
    if (items == NULL)
        return NULL;
    PyObject *records = PyList_New(0), *kept = NULL, *result = NULL;
    if (records == NULL)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    for (Py_ssize_t index = 0; index < n; index++) {
        PyObject *record = one(PySequence_Fast_GET_ITEM(items, index), decode_line, validate,
                               type, offsets, build);
        if (record == NULL) {
            if (!PyErr_ExceptionMatches(Rejected))
                goto done;
            PyObject *type, *value, *traceback;
            PyErr_Fetch(&type, &value, &traceback);
            PyErr_NormalizeException(&type, &value, &traceback);
            PyObject *reason = value == NULL ? NULL : PyObject_GetAttr(value, s_reason);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
            if (reason == NULL)
                goto done;
            PyObject *entry = Py_BuildValue("(nN)", index, reason);
            if (entry == NULL)
                goto done;
            int failed = PyList_Append(rejected, entry);
            Py_DECREF(entry);
            if (failed < 0)
                goto done;
            if (kept == NULL) {
                if ((kept = PyList_New(index)) == NULL)
                    goto done;
                for (Py_ssize_t i = 0; i < index; i++) {
                    PyObject *number = PyLong_FromSsize_t(i);
                    if (number == NULL)
                        goto done;
                    PyList_SET_ITEM(kept, i, number);
                }
            }
            continue;
        }
        int failed = PyList_Append(records, record);
        Py_DECREF(record);
        if (failed < 0)
            goto done;
        if (kept != NULL) {
            PyObject *number = PyLong_FromSsize_t(index);
            if (number == NULL)
                goto done;
            failed = PyList_Append(kept, number);
            Py_DECREF(number);
            if (failed < 0)
                goto done;
        }
    }
    result = PyTuple_Pack(2, records, kept == NULL ? Py_None : kept);
done:
    Py_DECREF(items);
    Py_XDECREF(records);
    Py_XDECREF(kept);
    return result;
}

static PyObject *
decode_dns(PyObject *self, PyObject *args)
{
    return decode(args, dns_decode_line, dns_validate, dns_line_type, dns_offsets, dns_record);
}

static PyObject *
decode_mail(PyObject *self, PyObject *args)
{
    return decode(args, mail_decode_line, mail_validate, mail_line_type, mail_offsets,
                  mail_record);
}


/* ---------------------------------------------------------------- the join buffer */

/* a.ts <= b.ts of two DnsRecords: 1, 0, or -1 with an exception set. */
static int
ts_not_after(PyObject *a, PyObject *b)
{
    PyObject *x = field(a, (PyTypeObject *)dns_type, record_offsets, F_TS);
    if (x == NULL)
        return -1;
    PyObject *y = field(b, (PyTypeObject *)dns_type, record_offsets, F_TS);
    if (y == NULL) {
        Py_DECREF(x);
        return -1;
    }
    int result = (PyFloat_CheckExact(x) && PyFloat_CheckExact(y))
        ? PyFloat_AS_DOUBLE(x) <= PyFloat_AS_DOUBLE(y)
        : PyObject_RichCompareBool(x, y, Py_LE);
    Py_DECREF(x);
    Py_DECREF(y);
    return result;
}

/* join.py's DnsJoin._index, the per-record part: each record filed under its name, the name's
 * list kept sorted by time (appended when not before its last, else ``insort(entries, record)``,
 * join.py's own). */
static PyObject *
index_by_name(PyObject *self, PyObject *args)
{
    PyObject *by_name, *records, *insort;
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups is not configured");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!OO", &PyDict_Type, &by_name, &records, &insort))
        return NULL;
    PyObject *items = PySequence_Fast(records, "records must be a sequence");
    if (items == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *record = PySequence_Fast_GET_ITEM(items, i);
        PyObject *qname = field(record, (PyTypeObject *)dns_type, record_offsets, F_QNAME);
        if (qname == NULL)
            goto fail;
        PyObject *entries = PyDict_GetItemWithError(by_name, qname);
        int failed = 0;
        if (entries == NULL) {
            if (PyErr_Occurred())
                failed = 1;
            else {
                PyObject *fresh = PyList_New(1);
                if (fresh == NULL)
                    failed = 1;
                else {
                    Py_INCREF(record);
                    PyList_SET_ITEM(fresh, 0, record);
                    failed = PyDict_SetItem(by_name, qname, fresh) < 0;
                    Py_DECREF(fresh);
                }
            }
        }
        else if (!PyList_CheckExact(entries) || PyList_GET_SIZE(entries) == 0) {
            PyErr_SetString(PyExc_TypeError, "a name's entries must be a non-empty list");
            failed = 1;
        }
        else {
            Py_INCREF(entries);
            int in_order = ts_not_after(PyList_GET_ITEM(entries, PyList_GET_SIZE(entries) - 1),
                                        record);
            if (in_order < 0)
                failed = 1;
            else if (in_order)
                failed = PyList_Append(entries, record) < 0;
            else {
                PyObject *done = PyObject_CallFunctionObjArgs(insort, entries, record, NULL);
                failed = done == NULL;
                Py_XDECREF(done);
            }
            Py_DECREF(entries);
        }
        Py_DECREF(qname);
        if (failed)
            goto fail;
    }
    Py_DECREF(items);
    Py_RETURN_NONE;
fail:
    Py_DECREF(items);
    return NULL;
}

/* join.py's DnsJoin._drop_through, the per-name part: ``gone`` are the records that left the
 * buffer's runs, the oldest of their names; each name's list loses as many from its front (and
 * the name goes when none is left). */
static PyObject *
drop_from_names(PyObject *self, PyObject *args)
{
    PyObject *by_name, *gone;
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups is not configured");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O", &PyDict_Type, &by_name, &gone))
        return NULL;
    PyObject *items = PySequence_Fast(gone, "gone must be a sequence");
    if (items == NULL)
        return NULL;
    PyObject *counts = PyDict_New(), *key, *value;
    if (counts == NULL)
        goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *qname = field(PySequence_Fast_GET_ITEM(items, i), (PyTypeObject *)dns_type,
                                record_offsets, F_QNAME);
        if (qname == NULL)
            goto fail;
        PyObject *count = PyDict_GetItemWithError(counts, qname);
        Py_ssize_t before = 0;
        if (count != NULL)
            before = PyLong_AsSsize_t(count);
        else if (PyErr_Occurred()) {
            Py_DECREF(qname);
            goto fail;
        }
        PyObject *after = PyLong_FromSsize_t(before + 1);
        int failed = after == NULL || PyDict_SetItem(counts, qname, after) < 0;
        Py_XDECREF(after);
        Py_DECREF(qname);
        if (failed)
            goto fail;
    }
    Py_ssize_t pos = 0;
    while (PyDict_Next(counts, &pos, &key, &value)) {
        Py_ssize_t count = PyLong_AsSsize_t(value);
        PyObject *entries = PyDict_GetItemWithError(by_name, key);
        if (entries == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, key);
            goto fail;
        }
        if (!PyList_CheckExact(entries)) {
            PyErr_SetString(PyExc_TypeError, "a name's entries must be a list");
            goto fail;
        }
        if (PyList_GET_SIZE(entries) == count) {
            if (PyDict_DelItem(by_name, key) < 0)
                goto fail;
        }
        else if (PyList_SetSlice(entries, 0, count, NULL) < 0)
            goto fail;
    }
    Py_DECREF(counts);
    Py_DECREF(items);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(counts);
    Py_DECREF(items);
    return NULL;
}

/* ---------------------------------------------------------------- module */

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_VARARGS | METH_KEYWORDS,
     "Hand the module records.py's decoders, caches, record types and limits (once)."},
    {"decode_dns", decode_dns, METH_VARARGS,
     "decode_dns(lines, rejected) -> (records, kept): records.decode_dns in C."},
    {"decode_mail", decode_mail, METH_VARARGS,
     "decode_mail(lines, rejected) -> (records, kept): records.decode_mail in C."},
    {"index_by_name", index_by_name, METH_VARARGS,
     "index_by_name(by_name, records, insort): DnsJoin._index's loop over records in C."},
    {"drop_from_names", drop_from_names, METH_VARARGS,
     "drop_from_names(by_name, gone): DnsJoin._drop_through's per-name deletions in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "detector.core._speedups",
    "records.py's batch decoders and join.py's buffer upkeep in C (the loops and the usual "
    "record; the rest is theirs).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    static const char *names[] = {
        "ts", "qname", "qtype", "rcode", "answers", "resolver", "client", "message_id",
        "status", "sender", "tenant", "server", "category", "subject", "status_code",
        "dns_lookups", "dns_outcome", "detail", "reason", "upper",
    };
    PyObject **slots[] = {
        &s_ts, &s_qname, &s_qtype, &s_rcode, &s_answers, &s_resolver, &s_client, &s_message_id,
        &s_status, &s_sender, &s_tenant, &s_server, &s_category, &s_subject, &s_status_code,
        &s_dns_lookups, &s_dns_outcome, &s_detail, &s_reason, &s_upper,
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*slots[i] == NULL && (*slots[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return NULL;
    }
    if (zero == NULL && (zero = PyLong_FromLong(0)) == NULL)
        return NULL;
    if (nodata == NULL && (nodata = PyUnicode_InternFromString("NODATA")) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
