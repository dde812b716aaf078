impl ::lexigram::Event for AccountOpened {
    const NAME: &'static str = "bank.AccountOpened";
    const VERSION: u32 = 2u32;
    const KIND: ::lexigram::message::EventKind = ::lexigram::message::EventKind::Domain;
}
::lexigram::__private::inventory::submit! {
    ::lexigram::__private::EventRegistration::of:: < AccountOpened > (::core::file!(),
    ::core::line!())
}
