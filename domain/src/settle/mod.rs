//! Settlement over tariffs: interval mapping, periods, period close, postings.
