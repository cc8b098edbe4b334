//! Usage as Green Button (NAESB ESPI) XML (`GET /v1/customers/{id}/usage?format=xml`): an Atom
//! feed with one UsagePoint, its MeterReading, the ReadingType (energy in Wh, 15-minute
//! intervals, the currency) and one IntervalBlock whose IntervalReadings carry each interval's
//! imported energy, its cost in hundred-thousandths of the currency, and how the value was
//! obtained. Written from ESPI's concepts (UsagePoint, MeterReading, ReadingType,
//! IntervalBlock, IntervalReading, ReadingQuality), for the tools utilities and customers already
//! use with Green Button files. Sans-IO.

use std::fmt::Write;

use rust_decimal::Decimal;

use crate::read_model::IntervalRow;

/// ESPI's namespace.
pub const ESPI_NAMESPACE: &str = "http://naesb.org/espi";

/// ISO 4217 numeric code of a currency ESPI files carry (`None`: not one Wattle bills in).
fn currency_number(code: &str) -> Option<u16> {
    Some(match code {
        "EUR" => 978,
        "GBP" => 826,
        "USD" => 840,
        "CHF" => 756,
        "DKK" => 208,
        "SEK" => 752,
        "NOK" => 578,
        "PLN" => 985,
        "CZK" => 203,
        "AUD" => 36,
        "CAD" => 124,
        _ => return None,
    })
}

/// ESPI's quality of a reading, from how Wattle obtained the value: 0 valid (signed by the
/// meter), 8 estimated (the ledger's VEE rule), 7 edited (a late reading corrected it), 17
/// validated (attested by the gateway for an unsigned legacy meter).
fn quality_code(quality: &str) -> u8 {
    match quality {
        "estimated" => 8,
        "corrected" => 7,
        "gateway_attested" => 17,
        _ => 0,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn rfc3339(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The feed of `customer`'s intervals `rows` (in start order) over `[from, to)`, stamped
/// `updated_s` (the ledger time the model reflects).
pub fn render(customer: &str, currency: &str, rows: &[IntervalRow], (from, to): (i64, i64), updated_s: i64) -> String {
    let customer = escape(customer);
    let updated = rfc3339(updated_s);
    let mut xml = String::new();
    // Writing into a String cannot fail: the results below are ignored for that reason.
    let _ = write!(
        xml,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <feed xmlns=\"http://www.w3.org/2005/Atom\" xmlns:espi=\"{ESPI_NAMESPACE}\">\n\
         <id>urn:wattle:usage:{customer}:{from}:{to}</id>\n<title>Wattle usage of {customer}</title>\n\
         <updated>{updated}</updated>\n"
    );
    let entry = |xml: &mut String, id: &str, title: &str, content: &str| {
        let _ = writeln!(
            xml,
            "<entry><id>urn:wattle:{customer}:{id}</id><title>{title}</title><updated>{updated}</updated>\
             <content>{content}</content></entry>"
        );
    };
    entry(
        &mut xml,
        "usage-point",
        "Supply point",
        "<espi:UsagePoint><espi:ServiceCategory><espi:kind>0</espi:kind></espi:ServiceCategory></espi:UsagePoint>",
    );
    entry(&mut xml, "meter-reading", "Imported energy", "<espi:MeterReading/>");
    let currency_element =
        currency_number(currency).map(|number| format!("<espi:currency>{number}</espi:currency>")).unwrap_or_default();
    // uom 72: Wh; flowDirection 1: forward (delivered to the customer); accumulationBehaviour 4:
    // delta data (each value is its interval's energy); kind 12: energy.
    entry(
        &mut xml,
        "reading-type",
        "Energy per 15 minutes, Wh",
        &format!(
            "<espi:ReadingType><espi:accumulationBehaviour>4</espi:accumulationBehaviour>{currency_element}\
             <espi:flowDirection>1</espi:flowDirection><espi:intervalLength>900</espi:intervalLength>\
             <espi:kind>12</espi:kind><espi:powerOfTenMultiplier>0</espi:powerOfTenMultiplier>\
             <espi:uom>72</espi:uom></espi:ReadingType>"
        ),
    );
    let mut block = format!(
        "<espi:IntervalBlock><espi:interval><espi:duration>{}</espi:duration><espi:start>{from}</espi:start>\
         </espi:interval>",
        to - from
    );
    for row in rows {
        // Cost in hundred-thousandths of the currency, as ESPI states it.
        let cost = (row.charge * Decimal::from(100_000u32)).round();
        let _ = write!(
            block,
            "<espi:IntervalReading><espi:cost>{cost}</espi:cost><espi:ReadingQuality><espi:quality>{quality}\
             </espi:quality></espi:ReadingQuality><espi:timePeriod><espi:duration>900</espi:duration>\
             <espi:start>{start}</espi:start></espi:timePeriod><espi:value>{value}</espi:value></espi:IntervalReading>",
            quality = quality_code(&row.quality),
            start = row.start_s,
            value = row.import_wh,
        );
    }
    block.push_str("</espi:IntervalBlock>");
    entry(&mut xml, &format!("interval-block:{from}"), "Intervals", &block);
    xml.push_str("</feed>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_become_interval_readings_with_cost_and_quality() {
        let row = |start_s: i64, import_wh: u64, quality: &str, charge: &str| IntervalRow {
            start_s,
            local_start: String::new(),
            import_wh,
            export_wh: 0,
            quality: quality.into(),
            complete: true,
            charge: charge.parse().expect("decimal"),
            ..IntervalRow::default()
        };
        let rows = [row(1_767_225_600, 250, "actual", "0.0718500"), row(1_767_226_500, 300, "estimated", "0.086")];
        let xml = render("C<1>", "EUR", &rows, (1_767_225_600, 1_767_227_400), 1_767_227_400);
        assert!(xml.contains("<espi:currency>978</espi:currency>"), "{xml}");
        assert!(xml.contains("<espi:cost>7185</espi:cost>"), "{xml}");
        assert!(xml.contains("<espi:quality>8</espi:quality>"), "{xml}");
        assert!(xml.contains("<espi:start>1767226500</espi:start></espi:timePeriod><espi:value>300</espi:value>"));
        assert!(xml.contains("C&lt;1&gt;") && !xml.contains("C<1>"), "the customer id is escaped");
        assert_eq!(xml.matches("<espi:IntervalReading>").count(), 2);
    }
}
