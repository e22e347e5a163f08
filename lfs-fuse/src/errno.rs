//! The one table from engine errors to errno values. Exhaustive on purpose: a new error
//! variant does not compile until it has an errno here.

use lfs_core::FsError;

pub fn errno(e: &FsError) -> i32 {
    match e {
        FsError::NotFound => libc::ENOENT,
        FsError::Exists => libc::EEXIST,
        FsError::NotEmpty => libc::ENOTEMPTY,
        FsError::NotDir => libc::ENOTDIR,
        FsError::IsDir => libc::EISDIR,
        FsError::NameTooLong => libc::ENAMETOOLONG,
        FsError::Invalid(_) => libc::EINVAL,
        FsError::NoSpace => libc::ENOSPC,
        FsError::FileTooBig => libc::EFBIG,
        FsError::TooManyLinks => libc::EMLINK,
        FsError::NoAttr => libc::ENODATA,
        FsError::Range => libc::ERANGE,
        FsError::TooBig => libc::E2BIG,
        FsError::NotPermitted => libc::EPERM,
        FsError::AccessDenied => libc::EACCES,
        FsError::NoSuchOffset => libc::ENXIO,
        FsError::ReadOnly => libc::EROFS,
        FsError::NotSupported => libc::EOPNOTSUPP,
        FsError::Stale(_) => libc::ESTALE,
        FsError::Io(_)
        | FsError::Corrupt { .. }
        | FsError::Damaged(_)
        | FsError::Poisoned
        | FsError::ShutDownFailed(_)
        | FsError::Bug { .. } => libc::EIO,
        // Not met while mounted (mkfs and mount report them as words), but as an errno:
        FsError::Layout(_) => libc::EINVAL,
        FsError::NotLfs(_) | FsError::Mount(_) => libc::EINVAL,
        // Nothing is served after FUSE_DESTROY; should a request slip through, the
        // connection is as good as gone.
        FsError::ShutDown => libc::ENOTCONN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_errors_keep_distinct_errnos() {
        assert_eq!(errno(&FsError::NameTooLong), libc::ENAMETOOLONG);
        assert_eq!(errno(&FsError::NoSpace), libc::ENOSPC);
        assert_eq!(errno(&FsError::Poisoned), libc::EIO);
        assert_eq!(errno(&FsError::NoAttr), libc::ENODATA);
    }
}
