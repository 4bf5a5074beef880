"""PostgreSQL's binary COPY format, read into numpy: numpy takes in thousands of rows of cells
at once, where psycopg2 parses text one value at a time (docs/performance.md).

Contract:
- `copy_rows(database, query, params, fields)` runs the query through COPY ... TO STDOUT (FORMAT
  binary), with psycopg2's errors raised as peewee's, and returns `from_binary_copy()` of it.
- `from_binary_copy(data, fields)`: rows of NOT NULL fixed-width `fields` [(name, numpy
  big-endian kind)] as an array of floats with a column per field, or a RuntimeError when the
  data is not in that layout.
"""

import io

import numpy as np
import peewee


def copy_rows(database, query, params, fields):
    cursor = database.cursor()
    copied = io.BytesIO()
    with peewee.__exception_wrapper__:  # psycopg2's errors as peewee's, as every other query's
        cursor.copy_expert(
            f"COPY ({cursor.mogrify(query, params).decode()}) TO STDOUT (FORMAT binary)", copied
        )
    return from_binary_copy(copied.getvalue(), fields)


COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def from_binary_copy(data, fields):
    """Rows of NOT NULL fixed-width `fields` [(name, numpy big-endian kind)], from PostgreSQL's
    binary COPY output, as an array of floats with a column per field."""
    layout = np.dtype(
        [("fields", ">i2")]
        + [part for name, kind in fields for part in [(f"{name}_length", ">i4"), (name, kind)]]
    )
    header_length = 19 + int.from_bytes(data[15:19], "big")  # signature, flags, extension length
    rows = np.frombuffer(data[header_length:-2], dtype=layout)  # the last 2 bytes end the data
    wrong_length = any(
        set(rows[f"{name}_length"].tolist()) - {np.dtype(kind).itemsize} for name, kind in fields
    )
    if data[:11] != COPY_SIGNATURE or set(rows["fields"].tolist()) - {len(fields)} or wrong_length:
        raise RuntimeError(f"PostgreSQL's binary COPY output is not the {len(fields)} fields expected")
    return np.column_stack([rows[name].astype(float) for name, _ in fields]).reshape(-1, len(fields))
