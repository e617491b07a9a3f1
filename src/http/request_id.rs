//! Middleware: a request id for every line logged while a request is handled.

use std::future::{ready, Ready};

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};

use crate::ops::logging::{self, InRequest};

/// Numbers each request and sets that number (see [`logging`](crate::ops::logging)) while the
/// request is being handled, synchronous part and future alike.
///
/// A `Transform` whose future is the inner one wrapped, not boxed: every
/// request passes here, and this costs one atomic increment and a
/// thread-local swap per poll, no allocation.
pub struct RequestIds;

impl<S, B> Transform<S, ServiceRequest> for RequestIds
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RequestIdService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestIdService { service }))
    }
}

/// The service [`RequestIds`] wraps around the app.
pub struct RequestIdService<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for RequestIdService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = InRequest<S::Future>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let id = logging::next_request_id();
        let future = logging::in_request_sync(id, || self.service.call(req));
        logging::in_request(id, future)
    }
}
