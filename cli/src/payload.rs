//! A payload given on the command line (`edgefn publish`, `edgefn invoke --event`): the text
//! itself, or with `@FILE` a file's bytes, read up to a limit (a payload is a message, not a
//! download: the cloud takes about 1 MiB, a function's frame 16 MiB).

use std::io::Read as _;

use crate::error::CliError;

/// The bytes of `arg`: the argument, or with `@FILE` the file's content, at most `limit` bytes.
///
/// # Errors
///
/// The file cannot be read, or is longer than `limit` (nothing is sent then).
pub(crate) fn bytes(arg: &str, limit: u64) -> Result<Vec<u8>, CliError> {
    let Some(file) = arg.strip_prefix('@') else {
        return Ok(arg.as_bytes().to_vec());
    };
    let f = std::fs::File::open(file).map_err(CliError::io("read", file))?;
    let mut out = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(CliError::io("read", file))?;
    if out.len() as u64 > limit {
        return Err(CliError::InvalidArgument {
            message: format!("{file} is larger than a payload may be ({limit} bytes)"),
            help:
                "send a smaller payload, or a reference to the data (a URL, a path on the device)"
                    .into(),
        });
    }
    Ok(out)
}
