#' oauthfs: OAuth access tokens from an oauthfs mount
#'
#' Reads the OAuth access tokens that an oauthfs mount gives each user,
#' with the functions of 'rstudioapi' for custom OAuth integrations.
#'
#' @details
#' An oauthfs mount offers the tokens of the integrations an administrator
#' configured as files:
#'
#' ```
#' /oauth/integrations.json        every integration (guid, name, authenticated, ...)
#' /oauth/<guid>/access_token      the current access token
#' /oauth/<guid>/expiry            when it expires (RFC 3339, UTC)
#' /oauth/<guid>/meta.json         the integration and its sign-in status
#' /oauth/by-name/<name>           a link to <guid>
#' ```
#'
#' This package reads them with the functions of 'rstudioapi' for Posit
#' Workbench's custom OAuth integrations, so that code written for one
#' works with the other: [getOAuthCredentials()], [getOAuthIntegrations()],
#' [getOAuthIntegration()] and [findOAuthIntegration()]. Every call reads the
#' mount, and oauthfs refreshes a token when it is read: call
#' [getOAuthCredentials()] each time you need a token rather than keeping it.
#'
#' @section The mount:
#' Each function takes a `mount` argument; its default, [oauthfs_mount()], is
#' the option `oauthfs.mount`, else the environment variable `OAUTHFS_MOUNT`,
#' else `/oauth`.
#'
#' @section Errors:
#' Errors are conditions of class `oauthfs_error` and of a class that says
#' what went wrong; each message names the path that was tried.
#'
#' | class | cause | what to do |
#' |---|---|---|
#' | `oauthfs_not_signed_in` | never signed in, or signed out (`ENOKEY`) | `oauthfs login NAME` |
#' | `oauthfs_expired` | the sign-in can no longer be refreshed (`EKEYEXPIRED`); also of class `oauthfs_not_signed_in` | `oauthfs login NAME` again |
#' | `oauthfs_io_error` | the provider or the broker is unreachable and the token has expired (`EIO`) | try again later |
#' | `oauthfs_not_found` | no integration has that guid (`ENOENT`) | [findOAuthIntegration()] |
#' | `oauthfs_no_mount` | nothing is mounted at the mount path, or its daemon is gone | start oauthfs, or set the mount path |
#'
#' The condition also has the fields `path` (the file tried), `mount`,
#' `guid`, `name` (the integration's, when known) and `reason` (the
#' system's error message).
#'
#' @section Installation:
#' From a checkout of the oauthfs repository: `R CMD INSTALL r/oauthfs`.
#' From GitHub:
#' `remotes::install_git("https://github.com/oauthfs/oauthfs", subdir = "r/oauthfs")`.
#' It needs only base R and 'jsonlite'.
#'
#' @examples
#' \dontrun{
#' github <- findOAuthIntegration(name = "^GitHub$")
#' creds <- tryCatch(
#'   getOAuthCredentials(github$guid),
#'   oauthfs_not_signed_in = function(e) stop("sign in first: oauthfs login GitHub")
#' )
#' # Use creds$access_token as a bearer token; never print or log it.
#' format(creds$expiry)
#' }
"_PACKAGE"

#' The path of the oauthfs mount
#'
#' The directory the functions of this package read: `mount` when it is
#' given, else the option `oauthfs.mount`, else the environment variable
#' `OAUTHFS_MOUNT`, else `/oauth`.
#'
#' @param mount A path, or `NULL` to look it up.
#' @return The path, a string.
#' @examples
#' oauthfs_mount()
#' oauthfs_mount("~/oauth")
#' @export
oauthfs_mount <- function(mount = NULL) {
  if (is.null(mount)) mount <- getOption("oauthfs.mount")
  if (is.null(mount) || identical(mount, "")) mount <- Sys.getenv("OAUTHFS_MOUNT")
  if (identical(mount, "")) mount <- "/oauth"
  if (!is.character(mount) || length(mount) != 1L || is.na(mount)) {
    stop("the oauthfs mount path must be a single string", call. = FALSE)
  }
  mount
}

# oauthfs_abort signals an error of the given classes, and oauthfs_error.
oauthfs_abort <- function(class, message, ...) {
  stop(structure(
    class = unique(c(class, "oauthfs_error", "error", "condition")),
    list(message = message, call = NULL, ...)
  ))
}

# mount_read returns list(ok, path, text) with the whole file as a string,
# or list(ok = FALSE, path, reason) with the system's message (strerror,
# e.g. "Required key not available") when the file cannot be opened.
mount_read <- function(path) {
  reason <- "cannot open the file"
  con <- withCallingHandlers(
    tryCatch(file(path, open = "rb", raw = TRUE), error = function(e) NULL),
    warning = function(w) {
      # "cannot open file 'PATH': REASON", translated in other languages.
      reason <<- sub(".*: ", "", conditionMessage(w))
      invokeRestart("muffleWarning")
    }
  )
  if (is.null(con)) {
    return(list(ok = FALSE, path = path, reason = reason))
  }
  on.exit(close(con))
  chunks <- list(raw(0))
  repeat {
    b <- readBin(con, "raw", n = 65536L)
    if (length(b) == 0L) break
    chunks[[length(chunks) + 1L]] <- b
  }
  text <- rawToChar(do.call(c, chunks))
  Encoding(text) <- "UTF-8"
  list(ok = TRUE, path = path, text = text)
}

# read_index reads integrations.json, or signals oauthfs_no_mount.
read_index <- function(mount) {
  r <- mount_read(file.path(mount, "integrations.json"))
  if (!r$ok) no_mount(mount, r)
  lapply(jsonlite::parse_json(r$text, simplifyVector = FALSE), tidy_integration)
}

no_mount <- function(mount, r) {
  oauthfs_abort("oauthfs_no_mount", sprintf(
    paste0(
      "oauthfs: no oauthfs mount at %s (%s: %s); start oauthfs there, or give ",
      "the mount's path with the mount argument, options(oauthfs.mount = ) or OAUTHFS_MOUNT"
    ),
    mount, r$path, r$reason
  ), path = r$path, mount = mount, reason = r$reason)
}

# tidy_integration makes the scopes character vectors.
tidy_integration <- function(i) {
  for (f in c("scopes", "granted_scopes", "resources", "docker_registries")) {
    if (f %in% names(i)) i[[f]] <- as.character(unlist(i[[f]]))
  }
  i
}

guid_pattern <- "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

check_string <- function(x, what) {
  if (!is.character(x) || length(x) != 1L || is.na(x) || !nzchar(x)) {
    stop(sprintf("%s must be a non-empty string", what), call. = FALSE)
  }
}
